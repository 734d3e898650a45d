-- notiflow 0.1 — subscribers: put_subscriber() with validation of every attribute.

-- Decodes base64url (with or without padding); NULL when it is not base64url.
CREATE FUNCTION notiflow.base64url_decode(s text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog
AS $$
    SELECT CASE WHEN s ~ '^[A-Za-z0-9_-]*={0,2}$'
                THEN decode(rpad(translate(rtrim(s, '='), '-_', '+/'),
                                 ((length(rtrim(s, '=')) + 3) / 4) * 4, '='), 'base64') END
$$;

-- Checks the push devices object {"fcm": [...], "apns": [...], "webpush": [...]}.
CREATE FUNCTION notiflow.check_push_devices(push jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kind text;
    devices jsonb;
    dev jsonb;
    i integer;
    p256dh bytea;
    auth bytea;
BEGIN
    IF jsonb_typeof(push) <> 'object' THEN
        RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
            DETAIL = 'attributes.push: expected an object {"fcm": [...], "apns": [...], "webpush": [...]}';
    END IF;
    FOR kind, devices IN SELECT key, value FROM jsonb_each(push) LOOP
        IF kind NOT IN ('fcm', 'apns', 'webpush') THEN
            RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                DETAIL = format('attributes.push.%s: unknown device kind (expected fcm, apns or webpush)', kind);
        END IF;
        IF jsonb_typeof(devices) <> 'array' THEN
            RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                DETAIL = format('attributes.push.%s: expected an array', kind);
        END IF;
        FOR i IN 0 .. jsonb_array_length(devices) - 1 LOOP
            dev := devices -> i;
            IF kind IN ('fcm', 'apns') THEN
                IF jsonb_typeof(dev) <> 'string' OR length(dev #>> '{}') NOT BETWEEN 8 AND 4096
                   OR dev #>> '{}' ~ '[[:space:][:cntrl:]]' THEN
                    RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                        DETAIL = format('attributes.push.%s[%s]: expected a device token string', kind, i);
                END IF;
            ELSE
                IF jsonb_typeof(dev) <> 'object' OR coalesce(dev ->> 'endpoint', '') !~ '^https://[^[:space:]]+$' THEN
                    RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                        DETAIL = format('attributes.push.webpush[%s].endpoint: expected an https URL', i);
                END IF;
                p256dh := notiflow.base64url_decode(dev #>> '{keys,p256dh}');
                -- on the curve: a point off it was accepted, then failed every send, never marked invalid
                IF p256dh IS NULL OR NOT notiflow.p256_point_valid(p256dh) THEN
                    RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                        DETAIL = format('attributes.push.webpush[%s].keys.p256dh: expected base64url of a 65-byte uncompressed point on the P-256 curve', i);
                END IF;
                auth := notiflow.base64url_decode(dev #>> '{keys,auth}');
                IF auth IS NULL OR length(auth) <> 16 THEN
                    RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                        DETAIL = format('attributes.push.webpush[%s].keys.auth: expected base64url of 16 bytes', i);
                END IF;
            END IF;
        END LOOP;
    END LOOP;
END;
$$;

-- Checks preferences {"channels": {channel: bool}, "workflows": {key: bool | {channel: bool}}}.
CREATE FUNCTION notiflow.check_preferences(prefs jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    section text;
    body jsonb;
    k text;
    v jsonb;
    ch text;
    flag jsonb;
BEGIN
    IF jsonb_typeof(prefs) <> 'object' THEN
        RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
            DETAIL = 'attributes.preferences: expected an object {"channels": {...}, "workflows": {...}}';
    END IF;
    FOR section, body IN SELECT key, value FROM jsonb_each(prefs) LOOP
        IF section NOT IN ('channels', 'workflows') OR jsonb_typeof(body) <> 'object' THEN
            RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                DETAIL = format('attributes.preferences.%s: expected "channels" or "workflows" holding an object', section);
        END IF;
        FOR k, v IN SELECT key, value FROM jsonb_each(body) LOOP
            IF section = 'channels' THEN
                IF k NOT IN ('email', 'sms', 'push', 'chat', 'webhook') OR jsonb_typeof(v) <> 'boolean' THEN
                    RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                        DETAIL = format('attributes.preferences.channels.%s: expected a known channel mapped to true or false', k);
                END IF;
            ELSIF jsonb_typeof(v) = 'object' THEN
                FOR ch, flag IN SELECT key, value FROM jsonb_each(v) LOOP
                    IF ch NOT IN ('email', 'sms', 'push', 'chat', 'webhook') OR jsonb_typeof(flag) <> 'boolean' THEN
                        RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                            DETAIL = format('attributes.preferences.workflows.%s.%s: expected a known channel mapped to true or false', k, ch);
                    END IF;
                END LOOP;
            ELSIF jsonb_typeof(v) <> 'boolean' THEN
                RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                    DETAIL = format('attributes.preferences.workflows.%s: expected true, false or {channel: boolean}', k);
            END IF;
        END LOOP;
    END LOOP;
END;
$$;

-- Creates or updates a subscriber; attributes not given keep their value.
-- One email address, as the engine checks an inline one (engine.c email_valid): a local part
-- and a domain with a dot, no spaces or controls, nothing that would make it a list (, ;),
-- a display name (< > " ( )) or an escape (backslash), no dot at either end of a part nor two
-- in a row, at most 254 bytes.  (The body is read once, at CREATE FUNCTION.)
CREATE FUNCTION notiflow.email_address_valid(address text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT
-- The characters refused are listed, not taken from [:space:] and [:cntrl:] (whose members follow
-- the collation): controls, spaces (Unicode's too), list separators, brackets, quotes.  The engine's
-- email_valid (engine.c) applies the same rule to inline and rendered addresses.
RETURN address ~ '^[^@]+@[^@]+\.[^@]+$'
   AND address !~ '[\u0001-\u0020\u007f-\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff,;<>"()\\]'
   AND address !~ '(^|@)\.|\.(@|$)|\.\.' AND octet_length(address) <= 254;
COMMENT ON FUNCTION notiflow.email_address_valid(text) IS
    'Whether a text is one email address as notiflow sends to: local@domain.tld, without spaces, controls, list separators, brackets, quotes or a final dot.';

-- The size of a subscriber as it is copied into the executions that reach them: its attributes
-- as one object, without the null and empty ones (the given attributes are measured the same way,
-- so a new subscriber is not refused for its defaults).
CREATE FUNCTION notiflow.subscriber_bytes(s notiflow.subscribers)
RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_column_size(coalesce(jsonb_object_agg(e.k, e.v), '{}'))
      FROM jsonb_each(jsonb_build_object('name', s.name, 'email', s.email, 'phone', s.phone,
               'locale', s.locale, 'timezone', s.timezone, 'data', s.data, 'push', s.push,
               'chat', s.chat, 'preferences', s.preferences)) e(k, v)
     WHERE e.v <> 'null' AND e.v <> '{}'
$$;
COMMENT ON FUNCTION notiflow.subscriber_bytes(notiflow.subscribers) IS
    'The size in bytes of a subscriber''s attributes as one JSON object, without the null and empty ones (put_subscriber bounds it by notiflow.max_payload_size).';

CREATE FUNCTION notiflow.put_subscriber(id text, attributes jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $$
#variable_conflict use_variable
DECLARE
    a   jsonb := coalesce(attributes, '{}');
    key text;
    val jsonb;
    limit_text text;
    limit_bytes bigint;
    given_bytes bigint;
    stored_bytes bigint;
    old_bytes bigint;
BEGIN
    IF id IS NULL OR id = '' OR length(id) > 256 THEN
        RAISE EXCEPTION 'invalid subscriber id' USING ERRCODE = '22023',
            DETAIL = 'id: expected a non-empty string of at most 256 characters';
    END IF;
    IF jsonb_typeof(a) <> 'object' THEN
        RAISE EXCEPTION 'subscriber attributes must be a JSON object' USING ERRCODE = '22023',
            DETAIL = 'attributes: expected an object';
    END IF;
    -- a subscriber is copied into every execution that reaches them, as an inline recipient is
    -- (notiflow.trigger): the same bound, notiflow.max_payload_size, on what is given (a || '{}':
    -- a fresh value, never a compressed one) and on the subscriber it makes (below)
    limit_text := coalesce(current_setting('notiflow.max_payload_size', true), '256kB');
    limit_bytes := pg_size_bytes(CASE WHEN limit_text ~ '^[0-9]+$' THEN limit_text || 'kB' ELSE limit_text END);
    given_bytes := pg_column_size(a || '{}');
    IF given_bytes > limit_bytes THEN
        RAISE EXCEPTION 'subscriber attributes are too large' USING ERRCODE = '54000',
            DETAIL = format('attributes: %s bytes, the limit is %s bytes', given_bytes, limit_bytes),
            HINT = 'Raise notiflow.max_payload_size, or keep large data elsewhere and pass a reference.';
    END IF;
    FOR key, val IN SELECT e.key, e.value FROM jsonb_each(a) e LOOP
        IF key NOT IN ('name', 'email', 'phone', 'locale', 'timezone', 'data', 'push', 'chat', 'preferences') THEN
            RAISE EXCEPTION 'unknown subscriber attribute "%"', key USING ERRCODE = '22023',
                DETAIL = format('attributes.%s: expected one of name, email, phone, locale, timezone, data, push, chat, preferences', key);
        END IF;
        CONTINUE WHEN jsonb_typeof(val) = 'null' AND key IN ('name', 'email', 'phone', 'locale', 'timezone');
        IF key IN ('name', 'email', 'phone', 'locale', 'timezone') AND jsonb_typeof(val) <> 'string' THEN
            RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                DETAIL = format('attributes.%s: expected a string or null', key);
        END IF;
        -- one address: separators (, ;), brackets and quotes would make more of it (Mailgun's "to")
        IF key = 'email' AND NOT notiflow.email_address_valid(val #>> '{}') THEN
            RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                DETAIL = format('attributes.email: %s is not an email address', val);
        ELSIF key = 'phone' AND val #>> '{}' !~ '^\+[1-9][0-9]{6,14}$' THEN
            RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                DETAIL = format('attributes.phone: %s is not an E.164 number like +15551234567', val);
        ELSIF key = 'locale' AND val #>> '{}' !~ '^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$' THEN
            RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                DETAIL = format('attributes.locale: %s is not a locale tag like en or pt-BR', val);
        ELSIF key = 'timezone' THEN
            BEGIN
                PERFORM now() AT TIME ZONE (val #>> '{}');
            EXCEPTION WHEN invalid_parameter_value THEN
                RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                    DETAIL = format('attributes.timezone: %s is not a known time zone', val);
            END;
        ELSIF key IN ('data', 'chat') AND jsonb_typeof(val) <> 'object' THEN
            RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                DETAIL = format('attributes.%s: expected an object', key);
        ELSIF key = 'push' THEN
            PERFORM notiflow.check_push_devices(val);
        ELSIF key = 'preferences' THEN
            PERFORM notiflow.check_preferences(val);
        END IF;
        IF key = 'chat' AND EXISTS (SELECT 1 FROM jsonb_each(val) c
                                     WHERE jsonb_typeof(c.value) <> 'string' OR c.value #>> '{}' ~ '[[:cntrl:]]') THEN
            RAISE EXCEPTION 'invalid subscriber attribute' USING ERRCODE = '22023',
                DETAIL = 'attributes.chat: expected {"slack": "...", "discord": "...", "teams": "..."} with string addresses';
        END IF;
    END LOOP;

    -- the subscriber's size before, measured as below: one already too large may still shrink
    SELECT notiflow.subscriber_bytes(s) INTO old_bytes
      FROM notiflow.subscribers s WHERE s.id = put_subscriber.id FOR NO KEY UPDATE;

    INSERT INTO notiflow.subscribers AS s
           (id, name, email, phone, locale, timezone, data, push, chat, preferences)
    VALUES (id, a ->> 'name', a ->> 'email', a ->> 'phone', a ->> 'locale', a ->> 'timezone',
            coalesce(a -> 'data', '{}'), coalesce(a -> 'push', '{}'), coalesce(a -> 'chat', '{}'),
            coalesce(a -> 'preferences', '{}'))
    ON CONFLICT ON CONSTRAINT subscribers_pkey DO UPDATE SET
        name        = CASE WHEN a ? 'name' THEN excluded.name ELSE s.name END,
        email       = CASE WHEN a ? 'email' THEN excluded.email ELSE s.email END,
        phone       = CASE WHEN a ? 'phone' THEN excluded.phone ELSE s.phone END,
        locale      = CASE WHEN a ? 'locale' THEN excluded.locale ELSE s.locale END,
        timezone    = CASE WHEN a ? 'timezone' THEN excluded.timezone ELSE s.timezone END,
        data        = CASE WHEN a ? 'data' THEN excluded.data ELSE s.data END,
        push        = CASE WHEN a ? 'push' THEN excluded.push ELSE s.push END,
        chat        = CASE WHEN a ? 'chat' THEN excluded.chat ELSE s.chat END,
        preferences = CASE WHEN a ? 'preferences' THEN excluded.preferences ELSE s.preferences END,
        updated_at  = now()
    RETURNING notiflow.subscriber_bytes(s) INTO stored_bytes;
    -- attributes given one call at a time add up: the subscriber as a whole is bounded (measured
    -- as the attributes given are, without the empty ones); one that was too large already (the
    -- limit lowered since) may still shrink, and take small changes (an opt-out, a new address)
    IF stored_bytes > limit_bytes AND stored_bytes > coalesce(old_bytes, 0)
       AND (old_bytes IS NULL OR old_bytes <= limit_bytes OR given_bytes > 1024) THEN
        RAISE EXCEPTION 'subscriber is too large' USING ERRCODE = '54000',
            DETAIL = format('attributes: with the attributes kept, the subscriber would be %s bytes, the limit is %s bytes',
                            stored_bytes, limit_bytes),
            HINT = 'Raise notiflow.max_payload_size, or keep large data elsewhere and pass a reference.';
    END IF;
    -- An address reported invalid stays so while the subscriber has it, whatever else changes;
    -- one the subscriber no longer has is forgotten (given again later, it is tried again).
    -- (Clearing them all at every change of a contact attribute used them again.)
    IF a ?| ARRAY['email', 'phone', 'push', 'chat'] THEN
        UPDATE notiflow.subscribers s
           SET invalid_addresses = ARRAY(
                   SELECT x FROM unnest(s.invalid_addresses) WITH ORDINALITY AS u(x, o)
                    WHERE x IN (SELECT s.email UNION ALL SELECT s.phone
                                UNION ALL SELECT c.value #>> '{}' FROM jsonb_each(s.chat) c
                                UNION ALL SELECT CASE WHEN jsonb_typeof(d) = 'string' THEN d #>> '{}' ELSE d::text END
                                            FROM jsonb_each(s.push) k,
                                                 jsonb_array_elements(CASE WHEN jsonb_typeof(k.value) = 'array'
                                                                           THEN k.value ELSE '[]' END) d)
                    ORDER BY o)
         WHERE s.id = put_subscriber.id AND cardinality(s.invalid_addresses) > 0;
    END IF;
END;
$$;
COMMENT ON FUNCTION notiflow.put_subscriber(text, jsonb) IS
    'Creates or updates a subscriber; attributes not given keep their value.  Every attribute is validated.';
