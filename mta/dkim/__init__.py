"""dkim"""
