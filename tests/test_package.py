import echelon


def test_version_and_hierarchy():
    assert isinstance(echelon.__version__, str)
    assert issubclass(echelon.ConfigError, echelon.EchelonError)
    assert issubclass(echelon.RateLimited, echelon.ProviderError)
    assert issubclass(echelon.Timeout, TimeoutError)
