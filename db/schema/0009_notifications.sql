-- Notifications (issue 17): webhooks and their delivery log.  The secret is not
-- here: it lives in <data>/notifications/<name>.secret (mode 0600), read only by
-- the service, so that a catalog copy carries no secret.  events is a bit set
-- (runtime/notify.h: bit i = bv_notify_event_names[i]).
CREATE TABLE notifications (
    name       TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    events     INTEGER NOT NULL,
    has_secret INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
-- One row per (notification, event occurrence): the body is fixed when the event
-- happens, so every attempt sends the same bytes.  A pending row is due at
-- next_attempt_ms (unix ms); its attempts survive a restart.
CREATE TABLE notification_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notification    TEXT NOT NULL REFERENCES notifications(name) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    TEXT,
    next_attempt_ms INTEGER,
    next_attempt_at TEXT
);
CREATE INDEX notification_deliveries_of ON notification_deliveries(notification, id);
CREATE INDEX notification_deliveries_due ON notification_deliveries(next_attempt_ms)
    WHERE state = 'pending';
