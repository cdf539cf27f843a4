"""Local use without AWS: an API Gateway emulator in front of the real handlers."""
