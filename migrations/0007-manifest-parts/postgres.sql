-- up.sql beside this file, on PostgreSQL.
CREATE TABLE data_manifest_parts (
    data_key TEXT NOT NULL REFERENCES data_manifests (data_key),
    part     BIGINT NOT NULL CHECK (part >= 0),
    items    TEXT NOT NULL,
    PRIMARY KEY (data_key, part)
);
