"""Test suite of the CLV platform."""
