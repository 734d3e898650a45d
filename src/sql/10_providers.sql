-- notiflow 0.1 — providers: the adapter catalogue, put_provider() and the redacted view.

INSERT INTO notiflow.provider_kinds (kind, channel, required_config, secret_config) VALUES
    ('smtp',     'email',   '[["url", "from"]]', '{password}'),
    ('sendgrid', 'email',   '[["api_key", "from"]]', '{api_key}'),
    ('mailgun',  'email',   '[["api_key", "domain", "from"]]', '{api_key}'),
    ('ses',      'email',   '[["access_key_id", "secret_access_key", "region", "from"]]', '{secret_access_key}'),
    ('twilio',   'sms',     '[["account_sid", "auth_token", "from"]]', '{auth_token}'),
    ('sns',      'sms',     '[["access_key_id", "secret_access_key", "region"]]', '{secret_access_key}'),
    ('vonage',   'sms',     '[["api_key", "api_secret", "from"]]', '{api_secret}'),
    ('fcm',      'push',    '[["service_account"]]', '{service_account}'),
    ('apns',     'push',    '[["team_id", "key_id", "private_key", "topic"]]', '{private_key}'),
    ('webpush',  'push',    '[["vapid_public_key", "vapid_private_key", "subject"]]', '{vapid_private_key}'),
    ('slack',    'chat',    '[["webhook_url"], ["token", "channel"]]', '{webhook_url,token}'),
    ('discord',  'chat',    '[["webhook_url"]]', '{webhook_url}'),
    ('teams',    'chat',    '[["webhook_url"]]', '{webhook_url}'),
    ('webhook',  'webhook', '[["url", "secret"]]', '{secret}');

-- Checks a provider's config against its kind and upserts it.
CREATE FUNCTION notiflow.put_provider(name text, channel text, kind text, config jsonb,
                                      priority integer DEFAULT 0, enabled boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    k          notiflow.provider_kinds;
    alt        jsonb;
    missing    text[];
    first_miss text[];
    satisfied  boolean := false;
    key        text;
    val        jsonb;
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid provider name'
            USING ERRCODE = '22023',
                  DETAIL = format('name: %s is not 1-64 letters, digits or _.:- starting with a letter or digit', coalesce(quote_literal(name), 'NULL'));
    END IF;
    IF channel IS NULL OR channel NOT IN ('email', 'sms', 'push', 'chat', 'webhook') THEN
        RAISE EXCEPTION 'unknown channel "%"', channel
            USING ERRCODE = '22023',
                  DETAIL = 'channel: expected one of email, sms, push, chat, webhook';
    END IF;
    SELECT * INTO k FROM notiflow.provider_kinds pk WHERE pk.kind = put_provider.kind;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown provider kind "%"', kind
            USING ERRCODE = '22023',
                  DETAIL = format('kind: expected one of %s',
                                  (SELECT string_agg(pk.kind, ', ' ORDER BY pk.kind) FROM notiflow.provider_kinds pk));
    END IF;
    IF k.channel <> channel THEN
        RAISE EXCEPTION 'provider kind "%" does not serve channel "%"', kind, channel
            USING ERRCODE = '22023',
                  DETAIL = format('kind: %s serves channel %s', kind, k.channel);
    END IF;
    IF config IS NULL OR jsonb_typeof(config) <> 'object' THEN
        RAISE EXCEPTION 'provider config must be a JSON object'
            USING ERRCODE = '22023', DETAIL = 'config: expected an object';
    END IF;

    FOR alt IN SELECT value FROM jsonb_array_elements(k.required_config) LOOP
        SELECT coalesce(array_agg(req ORDER BY ord), '{}') INTO missing
          FROM jsonb_array_elements_text(alt) WITH ORDINALITY AS r(req, ord)
         WHERE coalesce(config ->> req, '') = '';
        IF cardinality(missing) = 0 THEN
            satisfied := true;
            EXIT;
        END IF;
        first_miss := coalesce(first_miss, missing);
    END LOOP;
    IF NOT satisfied THEN
        RAISE EXCEPTION 'provider config for kind "%" is incomplete', kind
            USING ERRCODE = '22023',
                  DETAIL = (SELECT string_agg(format('config.%s: required', m), '; ') FROM unnest(first_miss) m),
                  HINT = format('%s needs config keys %s', kind,
                                (SELECT string_agg(keys, ', or ')
                                   FROM (SELECT (SELECT string_agg(r, ' and ') FROM jsonb_array_elements_text(a) r) AS keys
                                           FROM jsonb_array_elements(k.required_config) a) s));
    END IF;

    FOR key, val IN SELECT e.key, e.value FROM jsonb_each(config) e LOOP
        IF key IN ('max_attempts', 'backoff_min_ms', 'backoff_max_ms', 'timeout_ms')
           AND (jsonb_typeof(val) <> 'number' OR val::numeric <> trunc(val::numeric) OR val::numeric < 1
                OR val::numeric > 2147483647) THEN
            RAISE EXCEPTION 'invalid provider config value'
                USING ERRCODE = '22023',
                      DETAIL = format('config.%s: expected a positive integer up to 2147483647, got %s', key, val);
        ELSIF key = 'rate_per_second' AND (jsonb_typeof(val) <> 'number' OR val::numeric <= 0) THEN
            RAISE EXCEPTION 'invalid provider config value'
                USING ERRCODE = '22023', DETAIL = format('config.%s: expected a positive number, got %s', key, val);
        ELSIF key IN ('base_url', 'url', 'webhook_url')
              AND (jsonb_typeof(val) <> 'string' OR val #>> '{}' !~ '^(https?|smtps?)://[^[:space:]]+$') THEN
            RAISE EXCEPTION 'invalid provider config value'
                USING ERRCODE = '22023', DETAIL = format('config.%s: expected an http(s) or smtp(s) URL, got %s', key, val);
        END IF;
    END LOOP;
    IF (config ? 'backoff_min_ms') AND (config ? 'backoff_max_ms')
       AND (config ->> 'backoff_min_ms')::numeric > (config ->> 'backoff_max_ms')::numeric THEN
        RAISE EXCEPTION 'invalid provider config value'
            USING ERRCODE = '22023', DETAIL = 'config.backoff_min_ms: greater than config.backoff_max_ms';
    END IF;

    IF kind IN ('fcm', 'apns', 'webpush') THEN PERFORM notiflow.check_push_config(kind, config); END IF;

    INSERT INTO notiflow.providers AS p (name, channel, kind, config, priority, enabled)
    VALUES (name, channel, kind, config, coalesce(priority, 0), coalesce(enabled, true))
    ON CONFLICT ON CONSTRAINT providers_pkey DO UPDATE
       SET channel = excluded.channel, kind = excluded.kind, config = excluded.config,
           priority = excluded.priority, enabled = excluded.enabled, updated_at = now();
END;
$$;
COMMENT ON FUNCTION notiflow.put_provider(text, text, text, jsonb, integer, boolean) IS
    'Creates or replaces a provider after checking its channel, kind and required config keys.';

CREATE VIEW notiflow.providers_redacted WITH (security_barrier) AS
SELECT p.name, p.channel, p.kind,
       (SELECT coalesce(jsonb_object_agg(e.key,
                        CASE WHEN e.key = ANY (k.secret_config) THEN to_jsonb('********'::text) ELSE e.value END),
                        '{}')
          FROM jsonb_each(p.config) e) AS config,
       p.priority, p.enabled, p.created_at, p.updated_at
  FROM notiflow.providers p
  JOIN notiflow.provider_kinds k ON k.kind = p.kind;
COMMENT ON VIEW notiflow.providers_redacted IS 'Providers with secret config values replaced by ********.';
