"""ESP webhook collectors: one module per provider, each a :class:`~.base.Webhook`."""
