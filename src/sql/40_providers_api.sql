-- notiflow 0.1 — provider adapters callable without network I/O (tests, configuration checks).

CREATE FUNCTION notiflow.provider_preview(provider text, recipient text, content jsonb)
    RETURNS jsonb AS 'MODULE_PATHNAME', 'provider_preview' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.provider_preview(text, text, jsonb) IS
    'The request (URL, headers, body, credentials) a provider''s adapter would send; contains secrets.';
REVOKE ALL ON FUNCTION notiflow.provider_preview(text, text, jsonb) FROM PUBLIC;

CREATE FUNCTION notiflow.provider_classify(kind text, status integer, headers text[], body text,
                                           curl_code integer DEFAULT 0, purpose integer DEFAULT 0)
    RETURNS jsonb AS 'MODULE_PATHNAME', 'provider_classify' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.provider_classify(text, integer, text[], text, integer, integer) IS
    'How a provider''s adapter classifies a response: sent, retry, permanent, invalid_recipient or rejected; recipient_fault: a permanent answer about the recipient that does not count against the provider.';
