-- Alert rules, their firings and the budget crossings already announced
-- (../migrations/0008_alerts.sql, docs/alerts.md).
CREATE TABLE alert_rules (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant      TEXT NOT NULL,
    fleet       BOOLEAN NOT NULL DEFAULT FALSE,
    kind        TEXT NOT NULL,
    params      TEXT NOT NULL,
    url         TEXT NOT NULL,
    format      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT
);
CREATE INDEX alert_rules_tenant ON alert_rules(tenant);

-- At most one open episode (resolved_at NULL) per rule and subject.
CREATE TABLE alert_firings (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id      TEXT NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
    tenant       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    summary      TEXT NOT NULL,
    data         TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    resolved_at  BIGINT
);
CREATE UNIQUE INDEX alert_firings_open ON alert_firings(rule_id, subject) WHERE resolved_at IS NULL;
CREATE INDEX alert_firings_tenant ON alert_firings(tenant, started_at);

-- Budget levels crossed per tenant and period (`YYYY-MM`): each announced once.
CREATE TABLE budget_crossings (
    tenant      TEXT NOT NULL,
    period      TEXT NOT NULL,
    level       TEXT NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (tenant, period, level)
);
