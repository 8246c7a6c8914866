"""Type stubs for the Rust extension module ``echelon._core``."""

__version__: str
