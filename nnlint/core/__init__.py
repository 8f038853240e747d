"""The engine's foundations: findings, rules, the registry, config, files, suppressions."""
