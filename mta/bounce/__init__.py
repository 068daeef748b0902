"""bounce"""
