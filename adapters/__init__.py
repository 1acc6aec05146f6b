"""Provider adapters: each one knows one provider's wire format and nothing about
tickets, SQL or HTTP serving. This package never imports ``proxy``."""
