-- incidents.contributor_dimensions / contributor_values / contributor_shares: the ranked contributors as data (dimension such as gateway or device, its value, its share of the incident's excess), beside their descriptions in contributors, so an action policy can act on the gateway an incident names. Rows written before have none (empty arrays).
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS contributor_dimensions Array(LowCardinality(String)) AFTER contributors;
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS contributor_values Array(String) AFTER contributor_dimensions;
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS contributor_shares Array(Float32) AFTER contributor_values;
