"""gdpr: export and erasure of what mta holds about one address (`mta gdpr export|erase`,
/api/v1/admin/gdpr). One module per store it reaches: spool.py, events.py, suppressions.py,
policy.py, outbox.py; the address matcher (match.py), the erasure key that turns an erased
address into a keyed hash (key.py), and the service that runs them in order (service.py).

What other packages import: `Gdpr`, `ErasureKey`, `Matcher`.
"""

from mta.gdpr.key import ErasureKey
from mta.gdpr.match import Matcher
from mta.gdpr.service import Gdpr

__all__ = ["ErasureKey", "Gdpr", "Matcher"]
