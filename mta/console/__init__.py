"""The operator console: server-rendered pages under /console/ of the admin HTTP listener.

One concept per module: accounts (who may sign in, with which role), sessions (server-side,
signed cookie), csrf (a token on every form), feed (the live events: SSE tail and per-minute
counts), data (what the pages show, from the same objects the admin JSON API uses), views
(the routes), site (the aiohttp sub-application). Templates and static files ship in the
package: the console works air-gapped.
"""

from mta.console.site import Console

__all__ = ["Console"]
