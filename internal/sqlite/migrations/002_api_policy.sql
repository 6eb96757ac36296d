-- Which device APIs may act for a device: native, ecowatt or both. Devices
-- registered before policies existed are native-only, the safe default.
ALTER TABLE devices ADD COLUMN api TEXT NOT NULL DEFAULT 'native';

-- Releases held back from a device after unauthenticated failure reports:
-- until until_ms, with the doubling counted in failures.
CREATE TABLE backoffs (
    device_id  TEXT    NOT NULL REFERENCES devices (id),
    release_id INTEGER NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    failures   INTEGER NOT NULL,
    until_ms   INTEGER NOT NULL,
    PRIMARY KEY (device_id, release_id)
);
