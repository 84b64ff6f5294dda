"""HTTP for every peer fleetgate talks to: one place decides how a client is built and how an
answer is read (bounded bodies, depth-limited JSON), so every client is hardened the same way."""
