"""Bundled demo data (see README.md here); in a wheel: ftsweep/demo_data, named in config as pkg://ftsweep.demo_data/<file>."""
