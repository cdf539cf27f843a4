"""One construct per concern; each takes a frozen props dataclass and exposes the
resources it makes as typed attributes. ``infra/stack.py`` only wires them together."""
