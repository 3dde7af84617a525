"""Reading and validating the YAML configuration file into ``domain.config`` values."""
