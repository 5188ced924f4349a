-- up.sql beside this file, on PostgreSQL.
CREATE TABLE feature_shards (
    cache_key     TEXT NOT NULL,
    shard         BIGINT NOT NULL CHECK (shard >= 0),
    shards        BIGINT NOT NULL CHECK (shards > shard),
    first_image   BIGINT NOT NULL,
    images        BIGINT NOT NULL CHECK (images > 0),
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done')),
    lease_owner   TEXT,
    lease_expires BIGINT,
    attempts      BIGINT NOT NULL DEFAULT 0,
    seconds       DOUBLE PRECISION,
    PRIMARY KEY (cache_key, shard)
);
