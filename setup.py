# The only reason this file exists: cffi builds the native core (csrc/) as ejlb._native.
from setuptools import setup

setup(cffi_modules=["src/ejlb/_build_native.py:ffibuilder"])
