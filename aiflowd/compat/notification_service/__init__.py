"""``notification_service``: the names AIFlow 0.3 code uses to send events, served by aiflowd's socket.

AIFlow sends events through its notification server; aiflowd has none, the daemon's
control socket takes them (``aiflowd.client``). Like ``ai_flow``, this package is
appended to the import path and never shadows a real installation.
"""
