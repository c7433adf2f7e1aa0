"""metrica-bridge: CRM domain events from Kafka to Yandex Metrica's CDP API."""

__version__ = "0.1.0"
