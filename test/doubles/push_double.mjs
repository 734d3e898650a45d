#!/usr/bin/env node
// push_double.mjs — test double for the push providers (FCM HTTP v1 with its
// OAuth token endpoint, APNs, Web Push) that notiflow's push adapters
// (worker/providers/fcm.c, apns.c, webpush.c) are tested against.
//
// One HTTPS server that speaks HTTP/2 and HTTP/1.1 (ALPN), so libcurl
// negotiates h2 as it does with Google and Apple. Each route checks what the
// real service checks — JWT signatures with the keys from --config, headers,
// the body shape — and answers in that service's own success or error shape.
// Web Push bodies are decrypted (RFC 8291 / RFC 8188) with the subscription's
// private key, and the plaintext is recorded. Requests are recorded in a ring;
// the control API under /_double/ reads the records, loads failure scripts
// and counts, like provider_double (see README.md, "push_double").
//
//   node push_double.mjs --cert FILE --key FILE [--config FILE] [--port N]
//   node push_double.mjs --self-check FILE    (decrypts RFC 8291 Appendix A)
//
// Needs only Node.js >= 20 (node:http2, node:crypto). Listens on 127.0.0.1.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http2 from 'node:http2';
import { STATUS_CODES } from 'node:http';
import { parseArgs } from 'node:util';

const RING = 10000;
const MAX_BODY = 1 << 20;
const PROVIDERS = ['fcm_token', 'fcm', 'apns', 'webpush'];
const FCM_ERROR = 'type.googleapis.com/google.firebase.fcm.v1.FcmError';
const FCM_SCOPES = ['https://www.googleapis.com/auth/firebase.messaging',
	'https://www.googleapis.com/auth/cloud-platform'];
const FCM_MESSAGE_FIELDS = ['name', 'data', 'notification', 'android', 'webpush', 'apns', 'fcm_options',
	'token', 'topic', 'condition'];
const APNS_PUSH_TYPES = ['alert', 'background', 'location', 'voip', 'complication', 'fileprovider', 'mdm',
	'liveactivity', 'pushtotalk'];
const SCRIPT_KEYS = ['status', 'error', 'retry_after', 'headers', 'body', 'content_type', 'delay_ms', 'drop'];

// ------------------------------------------------------------------ helpers

// A check that failed: the HTTP status, the provider's error code and a message.
class Refusal extends Error {
	constructor(status, code, message, extra) {
		super(message);
		this.status = status;
		this.code = code;
		this.extra = extra;
	}
}

// Returns the seconds since the epoch.
const nowSeconds = () => Math.floor(Date.now() / 1000);

// Decodes strict base64url (no padding); throws on anything else.
function base64urlStrict(s, what) {
	if (typeof s !== 'string' || !/^[A-Za-z0-9_-]*$/.test(s))
		throw new Error(`${what} is not base64url without padding`);
	return Buffer.from(s, 'base64url');
}

// Decodes base64url with or without padding; throws on anything else.
function base64urlLoose(s, what) {
	if (typeof s !== 'string' || !/^[A-Za-z0-9_-]*={0,2}$/.test(s))
		throw new Error(`${what} is not base64url`);
	return Buffer.from(s.replace(/=+$/, ''), 'base64url');
}

// Splits a compact JWS into its decoded header and claims, the signing input and the signature.
function jwtParse(token) {
	const parts = String(token).split('.');
	if (parts.length !== 3)
		throw new Error('the JWT does not have three parts');
	const header = JSON.parse(base64urlStrict(parts[0], 'the JWT header').toString('utf8'));
	const claims = JSON.parse(base64urlStrict(parts[1], 'the JWT claims').toString('utf8'));
	if (!header || typeof header !== 'object' || !claims || typeof claims !== 'object')
		throw new Error('the JWT header or claims are not JSON objects');
	return { header, claims, input: `${parts[0]}.${parts[1]}`, signature: base64urlStrict(parts[2], 'the JWT signature') };
}

// True when jwt is signed with alg (RS256 or ES256, raw r||s) by key.
function jwtVerify(jwt, alg, key) {
	if (jwt.header.alg !== alg)
		return false;
	if (alg === 'ES256')
		return jwt.signature.length === 64 &&
			crypto.verify('sha256', Buffer.from(jwt.input), { key, dsaEncoding: 'ieee-p1363' }, jwt.signature);
	return crypto.verify('sha256', Buffer.from(jwt.input), key, jwt.signature);
}

// Returns the P-256 public key object of a 65-byte uncompressed point.
function p256PublicKey(point) {
	if (point.length !== 65 || point[0] !== 4)
		throw new Error('not a 65-byte uncompressed P-256 point');
	return crypto.createPublicKey({
		format: 'jwk',
		key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33).toString('base64url') },
	});
}

// HKDF-SHA256 (RFC 5869) of length bytes.
const hkdf = (ikm, salt, info, length) => Buffer.from(crypto.hkdfSync('sha256', ikm, salt, info, length));

/*
 * Decrypts a Web Push message (RFC 8291 §3.3-3.4, §4; RFC 8188 §2): the
 * aes128gcm header salt(16) | rs(4) | idlen(1) | keyid, where keyid is the
 * application server's public key; one record, AES-128-GCM, padding ended by
 * the last-record delimiter 0x02.  Throws an Error saying what is wrong.
 */
function webpushDecrypt(body, uaPrivate, authSecret) {
	if (body.length < 21)
		throw new Error('the aes128gcm header is truncated');
	const salt = body.subarray(0, 16);
	const rs = body.readUInt32BE(16);
	const idlen = body[20];
	if (idlen !== 65 || body.length < 21 + idlen || body[21] !== 4)
		throw new Error(`keyid must be the application server's 65-byte uncompressed P-256 key (idlen ${idlen})`);
	const asPublic = body.subarray(21, 86);
	const record = body.subarray(86);
	if (rs < 18)
		throw new Error(`record size ${rs} is below 18`);
	if (record.length > rs)
		throw new Error(`the body holds more than one record (${record.length} bytes, rs ${rs}); Web Push allows one`);
	if (record.length < 17)
		throw new Error('the record is shorter than a delimiter and a tag');
	const ecdh = crypto.createECDH('prime256v1');
	ecdh.setPrivateKey(uaPrivate);
	const uaPublic = ecdh.getPublicKey();
	let secret;
	try {
		secret = ecdh.computeSecret(asPublic);
	} catch {
		throw new Error('keyid is not a point on P-256');
	}
	const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), uaPublic, asPublic]);
	const ikm = hkdf(secret, authSecret, keyInfo, 32);
	const cek = hkdf(ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16);
	const nonce = hkdf(ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12);
	const decipher = crypto.createDecipheriv('aes-128-gcm', cek, nonce);
	decipher.setAuthTag(record.subarray(record.length - 16));
	let padded;
	try {
		padded = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
	} catch {
		throw new Error('AES-128-GCM authentication failed (wrong keys, salt or key derivation)');
	}
	let end = padded.length - 1;
	while (end >= 0 && padded[end] === 0)
		end--;
	if (end < 0 || padded[end] !== 2)
		throw new Error('the padding delimiter is not 0x02 (the last record)');
	return {
		plaintext: padded.subarray(0, end), salt: salt.toString('base64url'), rs,
		keyid: asPublic.toString('base64url'), padding: padded.length - 1 - end,
	};
}

// ---------------------------------------------------------- the self-check

// Decrypts the body of an RFC 8291 Appendix A file and compares it with its plaintext.
function selfCheck(file) {
	const v = JSON.parse(fs.readFileSync(file, 'utf8'));
	const out = webpushDecrypt(base64urlLoose(v.body, 'body'), base64urlLoose(v.ua_private, 'ua_private'),
		base64urlLoose(v.auth_secret, 'auth_secret'));
	const plaintext = out.plaintext.toString('utf8');
	const ok = plaintext === v.plaintext && (!v.salt || out.salt === v.salt) &&
		(!v.as_public || out.keyid === v.as_public) && (!v.record_size || out.rs === v.record_size);
	console.log(JSON.stringify({ ok, plaintext, salt: out.salt, rs: out.rs, keyid: out.keyid, padding: out.padding }));
	return ok;
}

// ------------------------------------------------------------ configuration

// Reads --config: the expected credentials and the tokens/subscriptions to refuse.
function loadConfig(file) {
	const cfg = file ? JSON.parse(fs.readFileSync(file, 'utf8')) : {};
	const key = (section, name) => {
		const pem = cfg[section]?.public_key;
		if (!pem)
			return null;
		const k = crypto.createPublicKey(pem);
		if (k.asymmetricKeyType !== name)
			throw new Error(`${section}.public_key: expected an ${name.toUpperCase()} key, got ${k.asymmetricKeyType}`);
		return k;
	};
	const subscriptions = new Map();
	for (const [id, s] of Object.entries(cfg.webpush?.subscriptions ?? {})) {
		const priv = base64urlLoose(s.private_key, `webpush.subscriptions.${id}.private_key`);
		const auth = base64urlLoose(s.auth, `webpush.subscriptions.${id}.auth`);
		if (priv.length !== 32 || auth.length !== 16)
			throw new Error(`webpush.subscriptions.${id}: private_key must be 32 bytes and auth 16 bytes`);
		if (s.gone !== undefined && s.gone !== 404 && s.gone !== 410)
			throw new Error(`webpush.subscriptions.${id}.gone: expected 404 or 410`);
		subscriptions.set(id, { priv, auth, gone: s.gone, vapidKey: s.vapid_public_key });
	}
	return {
		fcm: cfg.fcm ?? {}, fcmKey: key('fcm', 'rsa'),
		apns: cfg.apns ?? {}, apnsKey: key('apns', 'ec'),
		subscriptions,
	};
}

// --------------------------------------------------------------- the state

let config;
let origin;
let records = [];
let seq = 0;
let scripts = [];
let stats;
const accessTokens = new Map();		// FCM access token -> expiry (ms)
const parked = new Set();			// requests a scripted delay holds: {timer, fn}

// Zeroes the counters.
function resetStats() {
	stats = { total: 0, providers: {}, unknown: { requests: 0, accepted: 0, rejected: 0, scripted: 0, dropped: 0 } };
	for (const p of PROVIDERS)
		stats.providers[p] = { requests: 0, accepted: 0, rejected: 0, scripted: 0, dropped: 0 };
}

// Counts and keeps a finished record.
function keep(rec) {
	stats.total++;
	const c = stats.providers[rec.provider] ?? stats.unknown;
	c.requests++;
	if (rec.verdict in c)
		c[rec.verdict]++;
	else if (rec.verdict === 'unrouted')
		c.rejected++;
	records.push(rec);
	if (records.length > RING)
		records.shift();
}

// Runs fn after ms, counting the request as parked meanwhile.
function later(ms, fn) {
	const p = { fn };
	p.timer = setTimeout(() => {
		parked.delete(p);
		fn();
	}, ms);
	parked.add(p);
}

// ----------------------------------------------------------- error shapes

const GOOGLE_STATUS = { 400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND',
	429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL', 503: 'UNAVAILABLE' };
const FCM_CODE = { 400: 'INVALID_ARGUMENT', 403: 'SENDER_ID_MISMATCH', 404: 'UNREGISTERED', 429: 'QUOTA_EXCEEDED',
	500: 'INTERNAL', 503: 'UNAVAILABLE' };
const OAUTH_CODE = { 400: 'invalid_request', 401: 'invalid_client', 429: 'rate_limit_exceeded', 500: 'internal_failure',
	503: 'temporarily_unavailable' };
const APNS_REASON = { 400: 'BadPayload', 403: 'Forbidden', 404: 'BadPath', 405: 'MethodNotAllowed', 410: 'Unregistered',
	413: 'PayloadTooLarge', 429: 'TooManyRequests', 500: 'InternalServerError', 503: 'ServiceUnavailable' };

// Returns the JSON body provider answers a refusal with (code: the provider's own error code, or null).
function errorBody(provider, status, code, message, extra) {
	switch (provider) {
	case 'fcm_token':
		return { error: code ?? OAUTH_CODE[status] ?? 'invalid_request', error_description: message };
	case 'fcm': {
		const error = { code: status, message, status: GOOGLE_STATUS[status] ?? 'UNKNOWN' };
		const fcmCode = code ?? FCM_CODE[status];
		if (fcmCode)
			error.details = [{ '@type': FCM_ERROR, errorCode: fcmCode }];
		return { error };
	}
	case 'apns':
		return { reason: code ?? APNS_REASON[status] ?? 'BadPayload', ...extra };
	default:
		return { code: status, error: STATUS_CODES[status] ?? 'Error', message, reason: code ?? (STATUS_CODES[status] ?? 'Error').replace(/ /g, '') };
	}
}

// -------------------------------------------------------------- the routes

// FCM OAuth 2.0 token endpoint: a service account's RS256 JWT bearer assertion for an access token.
function fcmToken(ctx) {
	const cfg = config.fcm;
	if (!/^application\/x-www-form-urlencoded\b/i.test(ctx.headers['content-type'] ?? ''))
		throw new Refusal(400, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded');
	const form = new URLSearchParams(ctx.body.toString('utf8'));
	ctx.rec.form = Object.fromEntries(form);
	if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer')
		throw new Refusal(400, 'unsupported_grant_type', `Invalid grant_type: ${form.get('grant_type') ?? ''}`);
	if (!form.get('assertion'))
		throw new Refusal(400, 'invalid_request', 'Missing required parameter: assertion');
	let jwt;
	try {
		jwt = jwtParse(form.get('assertion'));
	} catch (e) {
		throw new Refusal(400, 'invalid_grant', `Invalid JWT: ${e.message}`);
	}
	ctx.rec.jwt = { header: jwt.header, claims: jwt.claims };
	const c = jwt.claims;
	if (!config.fcmKey || !jwtVerify(jwt, 'RS256', config.fcmKey))
		throw new Refusal(400, 'invalid_grant', 'Invalid JWT Signature.');
	if (cfg.private_key_id && jwt.header.kid !== undefined && jwt.header.kid !== cfg.private_key_id)
		throw new Refusal(400, 'invalid_grant', 'Invalid JWT Signature.');
	if (c.iss !== cfg.client_email)
		throw new Refusal(400, 'invalid_grant', 'Invalid grant: account not found');
	if (c.aud !== `${origin}/token`)
		throw new Refusal(400, 'invalid_grant', `Invalid JWT: Failed audience check. The right audience is ${origin}/token`);
	const now = nowSeconds();
	if (!Number.isInteger(c.iat) || !Number.isInteger(c.exp) || c.exp <= now || c.iat > now + 60 || c.exp - c.iat > 3600)
		throw new Refusal(400, 'invalid_grant', 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.');
	if (typeof c.scope !== 'string' || !c.scope.split(' ').some((s) => FCM_SCOPES.includes(s)))
		throw new Refusal(400, 'invalid_scope', 'Invalid OAuth scope or ID token audience provided.');
	const token = `ya29.double-${crypto.randomBytes(24).toString('base64url')}`;
	accessTokens.set(token, Date.now() + 3600 * 1000);
	return { status: 200, json: { access_token: token, expires_in: 3600, token_type: 'Bearer' } };
}

// FCM HTTP v1 messages:send for one registration token.
function fcmSend(ctx, project) {
	const cfg = config.fcm;
	const m = /^Bearer (\S+)$/.exec(ctx.headers.authorization ?? '');
	if (!m)
		throw new Refusal(401, null, 'Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.');
	const expiry = accessTokens.get(m[1]);
	if (!expiry || expiry <= Date.now())
		throw new Refusal(401, null, 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.');
	if (project !== cfg.project_id)
		throw new Refusal(403, 'SENDER_ID_MISMATCH', `Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/${project}' (or it may not exist).`);
	if (!/^application\/json\b/i.test(ctx.headers['content-type'] ?? ''))
		throw new Refusal(400, null, 'Invalid JSON payload received. Content-Type must be application/json.');
	let req;
	try {
		req = JSON.parse(ctx.body.toString('utf8'));
	} catch (e) {
		throw new Refusal(400, null, `Invalid JSON payload received. ${e.message}`);
	}
	const bad = (field, why) => new Refusal(400, null, `Invalid value at '${field}': ${why}`);
	if (!req || typeof req !== 'object' || Array.isArray(req))
		throw bad('', 'expected an object');
	for (const k of Object.keys(req))
		if (k !== 'message' && k !== 'validate_only')
			throw new Refusal(400, null, `Invalid JSON payload received. Unknown name "${k}": Cannot find field.`);
	const msg = req.message;
	if (!msg || typeof msg !== 'object' || Array.isArray(msg))
		throw bad('message', 'expected an object');
	for (const k of Object.keys(msg))
		if (!FCM_MESSAGE_FIELDS.includes(k))
			throw new Refusal(400, null, `Invalid JSON payload received. Unknown name "${k}" at 'message': Cannot find field.`);
	if (['token', 'topic', 'condition'].filter((k) => k in msg).length !== 1)
		throw bad('message', 'exactly one of token, topic or condition is required');
	if ('notification' in msg) {
		const n = msg.notification;
		if (!n || typeof n !== 'object' || Array.isArray(n))
			throw bad('message.notification', 'expected an object');
		for (const [k, v] of Object.entries(n)) {
			if (!['title', 'body', 'image'].includes(k))
				throw new Refusal(400, null, `Invalid JSON payload received. Unknown name "${k}" at 'message.notification': Cannot find field.`);
			if (typeof v !== 'string')
				throw bad(`message.notification.${k}`, `(TYPE_STRING), ${JSON.stringify(v)}`);
		}
	}
	if ('data' in msg) {
		if (!msg.data || typeof msg.data !== 'object' || Array.isArray(msg.data))
			throw bad('message.data', 'expected a map of strings');
		Object.entries(msg.data).forEach(([k, v], i) => {
			if (typeof v !== 'string')
				throw bad(`message.data[${i}].value`, `(TYPE_STRING), ${JSON.stringify(v)}`);
			if (k === 'from' || k === 'message_type' || /^(google|gcm)/.test(k))
				throw bad(`message.data[${i}].key`, `"${k}" is a reserved key`);
		});
	}
	if ('token' in msg) {
		const token = msg.token;
		if (typeof token !== 'string' || !/^[A-Za-z0-9_:-]+$/.test(token) || (cfg.invalid ?? []).includes(token))
			throw new Refusal(400, 'INVALID_ARGUMENT', 'The registration token is not a valid FCM registration token');
		if ((cfg.unregistered ?? []).includes(token))
			throw new Refusal(404, 'UNREGISTERED', 'Requested entity was not found.');
	}
	const id = req.validate_only ? 'fake_message_id' : `0:${Date.now()}%${crypto.randomBytes(8).toString('hex')}`;
	ctx.rec.message_id = `projects/${project}/messages/${id}`;
	return { status: 200, json: { name: ctx.rec.message_id } };
}

// APNs provider API over HTTP/2 with token-based (ES256 JWT) authentication.
function apnsSend(ctx, deviceToken) {
	const cfg = config.apns;
	const h = ctx.headers;
	if (ctx.rec.http_version !== '2.0')
		throw new Refusal(505, 'HTTP2Required', 'APNs accepts HTTP/2 only');
	const m = /^bearer (\S+)$/i.exec(h.authorization ?? '');
	if (!m)
		throw new Refusal(403, 'MissingProviderToken', 'no provider token');
	let jwt;
	try {
		jwt = jwtParse(m[1]);
	} catch (e) {
		throw new Refusal(403, 'InvalidProviderToken', e.message);
	}
	ctx.rec.jwt = { header: jwt.header, claims: jwt.claims };
	if (!config.apnsKey || jwt.header.kid !== cfg.key_id || !jwtVerify(jwt, 'ES256', config.apnsKey))
		throw new Refusal(403, 'InvalidProviderToken', 'kid, alg or signature wrong (ES256 needs a 64-byte r||s signature)');
	const now = nowSeconds();
	if (jwt.claims.iss !== cfg.team_id || !Number.isInteger(jwt.claims.iat) || jwt.claims.iat > now + 60)
		throw new Refusal(403, 'InvalidProviderToken', 'iss is not the team id, or iat is missing or in the future');
	if (now - jwt.claims.iat > 3600)
		throw new Refusal(403, 'ExpiredProviderToken', 'iat is more than an hour old');
	if (!h['apns-topic'])
		throw new Refusal(400, 'MissingTopic', 'apns-topic is required');
	if (h['apns-topic'] !== cfg.topic)
		throw new Refusal(400, 'TopicDisallowed', `topic ${h['apns-topic']} is not ${cfg.topic}`);
	if (!APNS_PUSH_TYPES.includes(h['apns-push-type']))
		throw new Refusal(400, 'InvalidPushType', 'apns-push-type is missing or unknown');
	if (h['apns-priority'] !== undefined && !['1', '5', '10'].includes(h['apns-priority']))
		throw new Refusal(400, 'BadPriority', 'apns-priority must be 1, 5 or 10');
	if (h['apns-expiration'] !== undefined && !/^\d+$/.test(h['apns-expiration']))
		throw new Refusal(400, 'BadExpirationDate', 'apns-expiration must be a UNIX time');
	if (h['apns-id'] !== undefined && !/^[0-9A-Fa-f]{8}-([0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$/.test(h['apns-id']))
		throw new Refusal(400, 'BadMessageId', 'apns-id must be a UUID');
	if (h['apns-collapse-id'] !== undefined && Buffer.byteLength(h['apns-collapse-id']) > 64)
		throw new Refusal(400, 'BadCollapseId', 'apns-collapse-id is over 64 bytes');
	if (deviceToken === '')
		throw new Refusal(400, 'MissingDeviceToken', 'no device token in the path');
	if (!/^([0-9A-Fa-f]{2})+$/.test(deviceToken) || (cfg.bad_tokens ?? []).includes(deviceToken))
		throw new Refusal(400, 'BadDeviceToken', 'the device token is not valid');
	if ((cfg.unregistered ?? []).includes(deviceToken))
		throw new Refusal(410, 'Unregistered', 'the device token is no longer active', { timestamp: Date.now() });
	if (ctx.body.length === 0)
		throw new Refusal(400, 'PayloadEmpty', 'the payload is empty');
	if (ctx.body.length > 4096)
		throw new Refusal(413, 'PayloadTooLarge', 'the payload is over 4096 bytes');
	let payload;
	try {
		payload = JSON.parse(ctx.body.toString('utf8'));
	} catch {
		payload = null;
	}
	if (!payload || typeof payload !== 'object' || !payload.aps || typeof payload.aps !== 'object')
		throw new Refusal(400, 'BadPayload', 'the payload is not a JSON object with an "aps" dictionary');
	const id = h['apns-id'] ?? crypto.randomUUID().toUpperCase();
	ctx.rec.message_id = id;
	return { status: 200, headers: { 'apns-id': id } };
}

// Parses `vapid t=<jwt>, k=<key>` (RFC 8292 §3); null when it is not that scheme.
function vapidParams(value) {
	const m = /^vapid\s+(.*)$/i.exec(value);
	if (!m)
		return null;
	const params = {};
	for (const part of m[1].split(',')) {
		const kv = /^\s*([A-Za-z]+)\s*=\s*"?([^"\s]*)"?\s*$/.exec(part);
		if (kv)
			params[kv[1].toLowerCase()] = kv[2];
	}
	return params;
}

// Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm message encryption (RFC 8291).
function webpushSend(ctx, id) {
	const h = ctx.headers;
	const sub = config.subscriptions.get(id);
	ctx.rec.subscription = id;
	if (!sub)
		throw new Refusal(404, 'SubscriptionNotFound', 'no such push subscription');
	if (sub.gone)
		throw new Refusal(sub.gone, 'SubscriptionGone', 'the push subscription has unsubscribed or expired');
	if (!h.authorization)
		throw new Refusal(401, 'MissingAuthorization', 'a VAPID Authorization header is required');
	const p = vapidParams(h.authorization);
	if (!p || !p.t || !p.k)
		throw new Refusal(401, 'InvalidAuthorization', 'expected Authorization: vapid t=<JWT>, k=<public key>');
	let key;
	let jwt;
	try {
		key = p256PublicKey(base64urlLoose(p.k, 'k'));
		jwt = jwtParse(p.t);
	} catch (e) {
		throw new Refusal(403, 'InvalidVapid', e.message);
	}
	ctx.rec.jwt = { header: jwt.header, claims: jwt.claims, k: p.k };
	if (sub.vapidKey && p.k.replace(/=+$/, '') !== sub.vapidKey.replace(/=+$/, ''))
		throw new Refusal(403, 'VapidKeyMismatch', 'k is not the application server key of this subscription');
	if (!jwtVerify(jwt, 'ES256', key))
		throw new Refusal(403, 'InvalidVapidSignature', 'the JWT is not an ES256 signature by k (64-byte r||s)');
	const c = jwt.claims;
	if (c.aud !== origin)
		throw new Refusal(403, 'InvalidAudience', `aud must be the push service origin ${origin}`);
	const now = nowSeconds();
	if (!Number.isInteger(c.exp) || c.exp <= now || c.exp > now + 86400 + 60)
		throw new Refusal(403, 'InvalidExpiration', 'exp must be in the future and within 24 hours');
	if (typeof c.sub !== 'string' || !/^(mailto:|https:)/.test(c.sub))
		throw new Refusal(403, 'InvalidSubject', 'sub must be a mailto: or https: URI');
	if (h.ttl === undefined)
		throw new Refusal(400, 'MissingTTL', 'the TTL header is required');
	if (!/^\d+$/.test(h.ttl))
		throw new Refusal(400, 'InvalidTTL', 'TTL must be a non-negative integer');
	if (h.urgency !== undefined && !['very-low', 'low', 'normal', 'high'].includes(h.urgency))
		throw new Refusal(400, 'InvalidUrgency', 'Urgency must be very-low, low, normal or high');
	if (h.topic !== undefined && !/^[A-Za-z0-9_-]{1,32}$/.test(h.topic))
		throw new Refusal(400, 'InvalidTopic', 'Topic must be at most 32 base64url characters');
	if (ctx.body.length > 4096)
		throw new Refusal(413, 'PayloadTooLarge', 'the body is over 4096 bytes');
	if (ctx.body.length > 0) {
		if ((h['content-encoding'] ?? '').toLowerCase() !== 'aes128gcm')
			throw new Refusal(400, 'UnsupportedContentEncoding', 'Content-Encoding must be aes128gcm');
		let out;
		try {
			out = webpushDecrypt(ctx.body, sub.priv, sub.auth);
		} catch (e) {
			throw new Refusal(400, 'DecryptionFailed', e.message);
		}
		const text = out.plaintext.toString('utf8');
		if (Buffer.from(text, 'utf8').equals(out.plaintext))
			ctx.rec.plaintext = text;
		else
			ctx.rec.plaintext_base64 = out.plaintext.toString('base64');
		ctx.rec.encryption = { salt: out.salt, rs: out.rs, keyid: out.keyid, padding: out.padding };
	}
	const mid = crypto.randomBytes(16).toString('base64url');
	ctx.rec.message_id = mid;
	return { status: 201, headers: { location: `${origin}/message/${mid}`, ttl: h.ttl } };
}

// Returns the route of a path: provider record name and handler, or null.
function route(path) {
	let m;
	if (path === '/token')
		return { provider: 'fcm_token', handle: (ctx) => fcmToken(ctx) };
	if ((m = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(path)))
		return { provider: 'fcm', handle: (ctx) => fcmSend(ctx, decodeURIComponent(m[1])) };
	if ((m = /^\/3\/device\/([^/]*)$/.exec(path)))
		return { provider: 'apns', handle: (ctx) => apnsSend(ctx, decodeURIComponent(m[1])) };
	if ((m = /^\/push\/([^/]+)$/.exec(path)))
		return { provider: 'webpush', handle: (ctx) => webpushSend(ctx, decodeURIComponent(m[1])) };
	return null;
}

// ------------------------------------------------------------- the scripts

// Checks a script; returns an error string or null.
function scriptError(s) {
	if (!s || typeof s !== 'object' || Array.isArray(s))
		return 'a script is a JSON object';
	for (const k of Object.keys(s))
		if (!['match', 'provider', 'responses', 'repeat'].includes(k))
			return `unknown key "${k}"`;
	if (s.match === undefined && s.provider === undefined)
		return 'a script needs "match" or "provider"';
	if (s.match !== undefined && typeof s.match !== 'string')
		return '"match" is a path prefix';
	if (s.provider !== undefined && !PROVIDERS.includes(s.provider))
		return `"provider" is one of ${PROVIDERS.join(', ')}`;
	if (!Array.isArray(s.responses) || s.responses.length === 0)
		return '"responses" is a non-empty array';
	for (const [i, r] of s.responses.entries()) {
		if (!r || typeof r !== 'object' || Array.isArray(r))
			return `responses[${i}] is not an object`;
		for (const k of Object.keys(r))
			if (!SCRIPT_KEYS.includes(k))
				return `responses[${i}]: unknown key "${k}"`;
		if (r.status !== undefined && (!Number.isInteger(r.status) || r.status < 100 || r.status > 599))
			return `responses[${i}].status is an HTTP status`;
		if (r.status !== undefined && r.status < 400 && r.body === undefined && r.error === undefined)
			return `responses[${i}]: a status below 400 needs "body" or "error"`;
		if (r.delay_ms !== undefined && (!Number.isInteger(r.delay_ms) || r.delay_ms < 0))
			return `responses[${i}].delay_ms is a non-negative integer`;
		if (r.retry_after !== undefined && (!Number.isInteger(r.retry_after) || r.retry_after < 0))
			return `responses[${i}].retry_after is a non-negative integer`;
		if (r.headers !== undefined && (typeof r.headers !== 'object' || Array.isArray(r.headers) ||
			Object.values(r.headers).some((v) => typeof v !== 'string')))
			return `responses[${i}].headers is an object of strings`;
		if (r.content_type !== undefined && typeof r.content_type !== 'string')
			return `responses[${i}].content_type is a string`;
	}
	return null;
}

// Takes the next scripted response for a request to provider at path, or null.
function takeScripted(provider, path) {
	for (const s of scripts) {
		if ((s.match !== undefined && !path.startsWith(s.match)) || (s.provider !== undefined && s.provider !== provider))
			continue;
		if (s.next >= s.responses.length) {
			if (!s.repeat)
				continue;
			s.next = 0;
		}
		return s.responses[s.next++];
	}
	return null;
}

// ---------------------------------------------------------- the answering

// Writes an answer: {status, headers, json | raw (Buffer/string) [, contentType]}.
function send(res, a) {
	const headers = { ...(a.headers ?? {}) };
	let body = '';
	if (a.json !== undefined) {
		body = JSON.stringify(a.json);
		headers['content-type'] = 'application/json; charset=UTF-8';
	} else if (a.raw !== undefined) {
		body = a.raw;
		if (a.contentType)
			headers['content-type'] = a.contentType;
	}
	headers['content-length'] = String(Buffer.byteLength(body));
	res.writeHead(a.status, headers);
	res.end(body);
}

// Closes the request without an answer: HTTP/2 resets the stream, HTTP/1.1 closes the connection.
function drop(req) {
	if (req.httpVersion === '2.0')
		req.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
	else
		req.socket.destroy();
}

// Answers a request with a scripted response r.
function answerScripted(ctx, r) {
	const rec = ctx.rec;
	const headers = { ...(r.headers ?? {}) };
	if (r.retry_after !== undefined)
		headers['retry-after'] = String(r.retry_after);
	const status = r.status ?? 400;
	rec.status = status;
	if (r.body !== undefined) {
		const raw = typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
		send(ctx.res, { status, headers, raw, contentType: r.content_type ?? (typeof r.body === 'string' ? 'text/plain' : 'application/json') });
	} else {
		const extra = ctx.provider === 'apns' && status === 410 ? { timestamp: Date.now() } : undefined;
		send(ctx.res, { status, headers, json: errorBody(ctx.provider, status, r.error ?? null, `scripted ${status}`, extra) });
	}
}

// Runs the route's own checks and answers.
function answerRoute(ctx, rt) {
	const rec = ctx.rec;
	let a;
	try {
		a = rt.handle(ctx);
		rec.verdict = 'accepted';
	} catch (e) {
		if (!(e instanceof Refusal))
			throw e;
		rec.verdict = 'rejected';
		rec.reason = e.code ?? GOOGLE_STATUS[e.status] ?? String(e.status);
		rec.error = e.message;
		a = { status: e.status, json: errorBody(ctx.provider, e.status, e.code, e.message, e.extra) };
	}
	rec.status = a.status;
	send(ctx.res, a);
}

// Handles one request to a provider route (or to no route).
function handleProvider(ctx) {
	const { req, rec } = ctx;
	const rt = route(ctx.path);
	rec.provider = rt ? rt.provider : 'unknown';
	ctx.provider = rec.provider;
	const finish = () => keep(rec);
	if (!rt) {
		rec.verdict = 'unrouted';
		rec.status = 404;
		send(ctx.res, { status: 404, json: { error: 'not_found', message: `no route for ${ctx.path}` } });
		return finish();
	}
	if (req.method !== 'POST') {
		rec.verdict = 'rejected';
		rec.status = 405;
		send(ctx.res, { status: 405, headers: { allow: 'POST' }, json: errorBody(rec.provider, 405, null, 'only POST is allowed') });
		return finish();
	}
	const r = takeScripted(rec.provider, ctx.path);
	const act = () => {
		if (r && r.drop) {
			rec.verdict = 'dropped';
			drop(req);
		} else if (r && (r.status !== undefined || r.body !== undefined || r.error !== undefined ||
			r.retry_after !== undefined || r.headers !== undefined)) {
			rec.verdict = 'scripted';
			answerScripted(ctx, r);
		} else {
			answerRoute(ctx, rt);
		}
		finish();
	};
	if (r && r.delay_ms) {
		rec.delay_ms = r.delay_ms;
		later(r.delay_ms, act);
	} else {
		act();
	}
}

// Handles the control API under /_double/.
function handleControl(ctx) {
	const { req, res, path, url } = ctx;
	const what = path.slice('/_double/'.length);
	if (what === 'requests' && req.method === 'GET') {
		const p = url.searchParams.get('provider');
		return send(res, { status: 200, json: p ? records.filter((r) => r.provider === p) : records });
	}
	if (what === 'stats' && req.method === 'GET')
		return send(res, { status: 200, json: { ...stats, delayed_now: parked.size } });
	if (what === 'reset' && req.method === 'POST') {
		records = [];
		scripts = [];
		resetStats();
		return send(res, { status: 200, json: { reset: true } });
	}
	if (what === 'revoke_tokens' && req.method === 'POST') {
		const n = accessTokens.size;
		accessTokens.clear();
		return send(res, { status: 200, json: { revoked: n } });
	}
	if (what === 'script' && req.method === 'POST') {
		let s;
		try {
			s = JSON.parse(ctx.body.toString('utf8'));
		} catch (e) {
			return send(res, { status: 400, json: { error: `invalid JSON: ${e.message}` } });
		}
		const err = scriptError(s);
		if (err)
			return send(res, { status: 400, json: { error: err } });
		scripts.push({ ...s, next: 0 });
		return send(res, { status: 200, json: { scripts: scripts.length } });
	}
	return send(res, { status: 404, json: { error: 'not_found', message: `no control request ${req.method} ${path}` } });
}

// Reads the body, then dispatches to the control API or the provider routes.
function onRequest(req, res) {
	const chunks = [];
	let size = 0;
	req.on('data', (c) => {
		size += c.length;
		if (size <= MAX_BODY)
			chunks.push(c);
	});
	req.on('end', () => {
		const url = new URL(req.url, origin);
		const body = Buffer.concat(chunks);
		const ctx = { req, res, url, path: url.pathname, body, headers: req.headers };
		if (ctx.path.startsWith('/_double/'))
			return handleControl(ctx);
		const now = new Date();
		const headers = {};
		for (const [k, v] of Object.entries(req.headers))
			if (!k.startsWith(':'))
				headers[k] = Array.isArray(v) ? v.join(', ') : v;
		if (req.headers[':authority'] && !headers.host)
			headers.host = req.headers[':authority'];
		ctx.rec = {
			seq: ++seq, provider: null, http_version: req.httpVersion, method: req.method, path: ctx.path,
			query: Object.fromEntries(url.searchParams), headers,
		};
		const text = body.toString('utf8');
		if (Buffer.from(text, 'utf8').equals(body))
			ctx.rec.body = text;
		else
			ctx.rec.body_base64 = body.toString('base64');
		ctx.rec.received_at = now.toISOString();
		ctx.rec.received_ms = now.getTime();
		if (size > MAX_BODY) {
			ctx.rec.provider = 'unknown';
			ctx.rec.verdict = 'rejected';
			ctx.rec.status = 413;
			send(res, { status: 413, json: { error: 'too_large', message: `bodies over ${MAX_BODY} bytes are refused` } });
			return keep(ctx.rec);
		}
		handleProvider(ctx);
	});
}

// ------------------------------------------------------------------- main

const usage = 'usage: push_double.mjs --cert FILE --key FILE [--config FILE] [--port N]\n' +
	'       push_double.mjs --self-check RFC8291-APPENDIX-A.json';
let opts;
try {
	opts = parseArgs({
		options: {
			port: { type: 'string', default: '0' }, cert: { type: 'string' }, key: { type: 'string' },
			config: { type: 'string' }, 'self-check': { type: 'string' }, help: { type: 'boolean' },
		},
	}).values;
} catch (e) {
	console.error(`${e.message}\n${usage}`);
	process.exit(2);
}
if (opts.help) {
	console.log(usage);
	process.exit(0);
}
if (opts['self-check'] !== undefined) {
	try {
		process.exit(selfCheck(opts['self-check']) ? 0 : 1);
	} catch (e) {
		console.error(`self-check failed: ${e.message}`);
		process.exit(1);
	}
}
if (!opts.cert || !opts.key || !/^\d+$/.test(opts.port)) {
	console.error(usage);
	process.exit(2);
}
try {
	config = loadConfig(opts.config);
} catch (e) {
	console.error(`push_double: --config: ${e.message}`);
	process.exit(2);
}
resetStats();
const sessions = new Set();
const sockets = new Set();
const server = http2.createSecureServer({
	cert: fs.readFileSync(opts.cert), key: fs.readFileSync(opts.key), allowHTTP1: true,
}, onRequest);
server.on('session', (s) => {
	sessions.add(s);
	s.on('close', () => sessions.delete(s));
});
server.on('secureConnection', (s) => {
	sockets.add(s);
	s.on('close', () => sockets.delete(s));
});
server.on('error', (e) => {
	console.error(`push_double: ${e.message}`);
	process.exit(1);
});
server.listen(Number(opts.port), '127.0.0.1', () => {
	const { port } = server.address();
	origin = `https://127.0.0.1:${port}`;
	console.log(`listening on 127.0.0.1:${port}`);
});

// Stops on SIGINT/SIGTERM: answers the requests a delay holds, then closes every connection.
function stop() {
	for (const p of parked) {
		clearTimeout(p.timer);
		parked.delete(p);
		p.fn();
	}
	server.close(() => process.exit(0));
	for (const s of sessions)
		s.close();
	for (const s of sockets)
		if (!s.alpnProtocol || s.alpnProtocol === 'http/1.1')
			s.end();
	setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
