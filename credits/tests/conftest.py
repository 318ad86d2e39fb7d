from resolutions.tests.conftest import key_client, now, post_events  # noqa: F401 - shared fixtures
