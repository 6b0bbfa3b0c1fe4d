"""Shared test settings: hypothesis without wall-clock deadlines (CI machines are shared and noisy;
speed is measured in benchmarks/, never asserted in tests)."""
from hypothesis import settings

settings.register_profile("ejlb", deadline=None)
settings.load_profile("ejlb")
