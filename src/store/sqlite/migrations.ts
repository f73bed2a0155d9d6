// Versioned schema. Append new steps; never edit a step that has shipped.
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE identities (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('human','service','agent')),
    is_admin INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  CREATE INDEX tokens_identity ON tokens(identity_id);
  CREATE TABLE connections (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    database TEXT NOT NULL,
    username TEXT NOT NULL,
    sealed_secret BLOB,
    options TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
  );
  CREATE TABLE grants (
    identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    connection_id TEXT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (identity_id, connection_id)
  );
  CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    protocol TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    identity_name TEXT NOT NULL,
    identity_kind TEXT NOT NULL,
    client_addr TEXT NOT NULL,
    application_name TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    connection_name TEXT NOT NULL,
    target_host TEXT NOT NULL,
    target_port INTEGER NOT NULL,
    target_database TEXT NOT NULL,
    target_user TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    end_reason TEXT,
    event_count INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX sessions_started ON sessions(started_at);
  CREATE TABLE events (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
  ) WITHOUT ROWID;
  `,
  // 2: tamper evidence — per-event hash chain, signed checkpoints, sealed sessions in a
  // gateway-wide log, and every public key ever used to sign.
  `
  ALTER TABLE events ADD COLUMN hash TEXT NOT NULL DEFAULT '';
  CREATE TABLE checkpoints (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
  ) WITHOUT ROWID;
  CREATE TABLE seals (
    position INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    hash TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
  );
  CREATE TABLE signing_keys (
    key_id TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  `,
  // 3: a session's recording mode (durable, or best-effort when its connection opts in).
  `
  ALTER TABLE sessions ADD COLUMN recording TEXT NOT NULL DEFAULT 'durable';
  `,
  // 4: legal hold (retention never removes a held session).
  `
  ALTER TABLE sessions ADD COLUMN legal_hold INTEGER NOT NULL DEFAULT 0;
  CREATE INDEX sessions_expiry ON sessions(connection_id, ended_at);
  `,
  // 5: one seal log per gateway (the same schema as the PostgreSQL store, which gateways share).
  `
  CREATE TABLE seals_v5 (
    gateway_id TEXT NOT NULL DEFAULT '',
    position INTEGER NOT NULL,
    session_id TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    hash TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (gateway_id, position)
  );
  INSERT INTO seals_v5 (position, session_id, payload, hash, key_id, signature) SELECT position, session_id, payload, hash, key_id, signature FROM seals;
  DROP TABLE seals;
  ALTER TABLE seals_v5 RENAME TO seals;
  `,

  // 6: connectors (outbound tunnels to private networks).
  `
  CREATE TABLE connectors (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    enrollment_token_hash TEXT UNIQUE,
    enrollment_expires_at INTEGER,
    enrolled_at INTEGER,
    cert_serial TEXT,
    revoked_at INTEGER
  );
  `,

  // 7: SSH public keys registered to identities.
  `
  CREATE TABLE public_keys (
    id TEXT PRIMARY KEY,
    identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE INDEX public_keys_identity ON public_keys(identity_id);
  `,

  // 8: workload identity and attribution. An identity made by an OIDC token exchange keeps the
  // token's verified claims (JSON), where it came from ('oidc-exchange:<policy>') and its policy's
  // groups (JSON array); all NULL for identities an administrator made. Sessions keep a copy of the
  // claims taken at start, so recordings stay attributed after the identity is removed, and how
  // the session authenticated.
  `
  ALTER TABLE identities ADD COLUMN claims TEXT;
  ALTER TABLE identities ADD COLUMN auth_source TEXT;
  ALTER TABLE identities ADD COLUMN workload_groups TEXT;
  ALTER TABLE sessions ADD COLUMN identity_claims TEXT;
  ALTER TABLE sessions ADD COLUMN auth_method TEXT;
  CREATE INDEX sessions_identity_kind ON sessions(identity_kind, started_at);
  `,

  // 9: groups and access. A grant gives one action (connect, approve, audit, admin) to an identity
  // or a group, on one connection or, with connection_id NULL, on every connection. Its subject is
  // one of two foreign keys so that removing an identity or a group removes its grants. The
  // connect grants of step 1 become connect grants of their identity; that table goes.
  `
  CREATE TABLE groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
  );
  CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, identity_id)
  );
  CREATE INDEX group_members_identity ON group_members(identity_id);
  CREATE TABLE access_grants (
    id TEXT PRIMARY KEY,
    identity_id TEXT REFERENCES identities(id) ON DELETE CASCADE,
    group_id TEXT REFERENCES groups(id) ON DELETE CASCADE,
    action TEXT NOT NULL CHECK (action IN ('connect','approve','audit','admin')),
    connection_id TEXT REFERENCES connections(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    CHECK ((identity_id IS NULL) <> (group_id IS NULL))
  );
  -- NULLs are distinct in a unique index: coalesce makes "every connection" one value.
  CREATE UNIQUE INDEX access_grants_unique ON access_grants (coalesce(identity_id, ''), coalesce(group_id, ''), action, coalesce(connection_id, ''));
  CREATE INDEX access_grants_identity ON access_grants(identity_id);
  CREATE INDEX access_grants_group ON access_grants(group_id);
  CREATE INDEX access_grants_connection ON access_grants(connection_id);
  INSERT INTO access_grants (id, identity_id, action, connection_id, created_at)
    SELECT 'grant_' || lower(hex(randomblob(10))), identity_id, 'connect', connection_id, created_at FROM grants;
  DROP TABLE grants;
  `,

  // 10: single sign-on. Sign-ins in progress (OIDC and SAML; docs/sso.md), from `gatehouse login`
  // until the CLI collects its token, so that any gateway sharing the store can finish one; and
  // which identity a person at an identity provider is (external_key: issuer and subject).
  `
  CREATE TABLE pending_logins (
    id TEXT PRIMARY KEY,
    poll_token_hash TEXT NOT NULL UNIQUE,
    user_code TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    protocol TEXT NOT NULL CHECK (protocol IN ('oidc','saml')),
    state TEXT NOT NULL UNIQUE,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending','signed-in','refused','collected')),
    identity_id TEXT REFERENCES identities(id) ON DELETE CASCADE,
    error TEXT
  );
  CREATE INDEX pending_logins_expiry ON pending_logins(expires_at);
  CREATE TABLE external_identities (
    external_key TEXT PRIMARY KEY,
    identity_id TEXT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
  );
  CREATE INDEX external_identities_identity ON external_identities(identity_id);
  `,

  // 11: a sign-in releases its token only once the person confirmed it in the browser with the
  // terminal's code (docs/sso.md): where `gatehouse login` ran (address as seen, host as claimed),
  // the hash of the confirmation form's secret, when it was confirmed, and wrong codes so far.
  `
  ALTER TABLE pending_logins ADD COLUMN started_from TEXT;
  ALTER TABLE pending_logins ADD COLUMN started_host TEXT;
  ALTER TABLE pending_logins ADD COLUMN confirm_hash TEXT;
  ALTER TABLE pending_logins ADD COLUMN confirmed_at INTEGER;
  ALTER TABLE pending_logins ADD COLUMN code_failures INTEGER NOT NULL DEFAULT 0;
  `,

  // 12: several gateways on one store. Each session is owned by the gateway that records it
  // (gateway_id; '' for sessions recorded before this step), and each gateway holds a lease it
  // renews (heartbeat_at, ms). A gateway takes over only its own open sessions at start, and those
  // of gateways whose lease expired; a write for a session another gateway owns is refused.
  `
  ALTER TABLE sessions ADD COLUMN gateway_id TEXT NOT NULL DEFAULT '';
  CREATE INDEX sessions_open_owner ON sessions(gateway_id) WHERE ended_at IS NULL;
  CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
  );
  `,

  // 13: OIDC ID tokens exchanged for gatehouse tokens (docs/workload-identity.md), each under a
  // key — the SHA-256 of its issuer and jti, or of the whole token when it has no jti; never the
  // token — until it expires, so that every gateway sharing the store refuses a replay, also
  // after a restart. The primary key makes "exchanged first" one atomic insert.
  `
  CREATE TABLE exchanged_oidc_tokens (
    token_key TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL,
    exchanged_at INTEGER NOT NULL
  );
  CREATE INDEX exchanged_oidc_tokens_expiry ON exchanged_oidc_tokens(expires_at);
  `,
  // 14: policy versions (docs/policy.md). Every apply is a new version with the hash of its
  // canonical form; the newest is in force. Decisions in recordings name the version.
  `
  CREATE TABLE policy_versions (
    version INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    document TEXT NOT NULL,
    source TEXT NOT NULL,
    applied_by TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  );
  `,
  // 15: the admin audit log (src/audit/): one hash chain per gateway, every entry signed, never
  // removed by retention. Not a session: it has no end and no seal.
  `
  CREATE TABLE audit_log (
    gateway_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    hash TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (gateway_id, seq)
  );
  CREATE INDEX audit_log_time ON audit_log(ts);
  `,
  // 16: approval requests (docs/policy.md#holding-for-approval): an action a policy rule holds
  // waits for people to approve or deny it. status moves once from pending (compare-and-set).
  `
  CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    gateway_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    requester_name TEXT NOT NULL,
    requester_kind TEXT NOT NULL,
    requester_claims TEXT,
    connection_id TEXT NOT NULL,
    connection_name TEXT NOT NULL,
    protocol TEXT NOT NULL,
    rule TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    action TEXT NOT NULL,
    approvers TEXT NOT NULL,
    quorum INTEGER NOT NULL,
    decisions TEXT NOT NULL,
    reason TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    decided_at INTEGER
  );
  CREATE INDEX approvals_status ON approvals(status, created_at);
  `,
  // 17: just-in-time access: a grant may expire (an approved access request); expired grants
  // decide nothing and are kept for the record.
  `
  ALTER TABLE access_grants ADD COLUMN expires_at INTEGER;
  `,
  // 18: full-text search over what sessions ran (src/store/search-text.ts), filled behind the
  // recording once a session has ended; search_indexed marks the sessions already in it.
  `
  ALTER TABLE sessions ADD COLUMN search_indexed INTEGER NOT NULL DEFAULT 0;
  CREATE INDEX sessions_search_pending ON sessions(search_indexed, ended_at);
  CREATE VIRTUAL TABLE event_search USING fts5(session_id UNINDEXED, seq UNINDEXED, text, tokenize = 'unicode61');
  `,
  // 19: review flags of ended sessions (denied, held, flagged, lost events: search-text.ts), set
  // by the same pass that indexes them, for session lists to filter on.
  `
  ALTER TABLE sessions ADD COLUMN review_flags INTEGER NOT NULL DEFAULT 0;
  `,
];
