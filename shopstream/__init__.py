"""The ground floor: settings, database access, the embedded servers and their jars, processes, Kafka admin.

Every other package may import it; it imports none of them (an import-linter contract in pyproject.toml).
"""
