from tests.support.daemon import mta_factory  # noqa: F401 - fixture
from tests.support.dnsserver import dns_server_factory  # noqa: F401 - fixture
from tests.support.mx import mx_factory, mx_tls_context  # noqa: F401 - fixtures
