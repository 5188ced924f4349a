-- A data manifest is recorded in parts of at most 16,384 images each, so
-- that neither recording nor reading a million images' manifest holds all of
-- its JSON (and SQLite's copies of it) at once. A manifest recorded in parts
-- keeps its features' key and split hash in `data_manifests.manifest` with
-- `"items": []`; its images are its parts' `items` (JSON lists) in `part`
-- order, recorded in the same transaction. Manifests recorded before keep
-- their images whole in `data_manifests.manifest` and have no parts.
CREATE TABLE data_manifest_parts (
    data_key TEXT NOT NULL REFERENCES data_manifests (data_key),
    part     INTEGER NOT NULL CHECK (part >= 0),
    items    TEXT NOT NULL,
    PRIMARY KEY (data_key, part)
) STRICT;
