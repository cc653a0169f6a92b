"""The config: each section's typed fields and their valid values (schema, fields), YAML read and
merged (loader) into typed sections (typed), the checks that span sections (validate), and the
zoo's derived model configs (zoo). Defaults live in configs/base.yaml only."""
