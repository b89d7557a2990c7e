-- Alert rules, their firings and the budget crossings already announced (docs/alerts.md).
-- A rule belongs to a tenant; `fleet` rules (node and capacity kinds) are made by admins and
-- watch the whole host or fleet.
CREATE TABLE alert_rules (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    fleet       INTEGER NOT NULL DEFAULT 0,
    kind        TEXT NOT NULL,
    params      TEXT NOT NULL,
    url         TEXT NOT NULL,
    format      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT
) STRICT;
CREATE INDEX alert_rules_tenant ON alert_rules(tenant);

-- One row per episode of a rule firing for a subject (a sandbox, node, tenant or host). At
-- most one open episode (resolved_at NULL) per rule and subject: that is the deduplication,
-- and of several servers on one store exactly one opens each episode.
CREATE TABLE alert_firings (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id     TEXT NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
    tenant      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    summary     TEXT NOT NULL,
    data        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    resolved_at INTEGER
) STRICT;
CREATE UNIQUE INDEX alert_firings_open ON alert_firings(rule_id, subject) WHERE resolved_at IS NULL;
CREATE INDEX alert_firings_tenant ON alert_firings(tenant, started_at);

-- Budget levels crossed per tenant and period (`YYYY-MM`): each announced once.
CREATE TABLE budget_crossings (
    tenant      TEXT NOT NULL,
    period      TEXT NOT NULL,
    level       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (tenant, period, level)
) STRICT;
