#!/usr/bin/env python3
"""SMTP test double for notiflow's e-mail delivery tests.

An aiosmtpd server on 127.0.0.1 that the SMTP provider adapter is pointed at
instead of a real relay.  Every accepted message is parsed and appended to
--out as one JSON line (envelope, headers, text and HTML parts, TLS and AUTH
state), written before the final 250 so a test that sees its send succeed
can read the line at once.  It checks AUTH PLAIN/LOGIN against configured
credentials, offers STARTTLS with the given certificate, refuses recipients
matching a pattern with 550, and can answer 421/45x for the first N
attempts to exercise retries.  It prints "listening on 127.0.0.1:PORT" when
ready.  Needs python3-aiosmtpd (Debian).
"""

import argparse
import asyncio
import datetime
import email
import email.policy
import hmac
import json
import logging
import re
import signal
import ssl
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

TEMPFAIL_TEXT = {
    421: "421 4.3.2 Service not available, closing transmission channel",
    450: "450 4.2.1 Mailbox temporarily unavailable, try again later",
    451: "451 4.3.0 Temporary local problem, try again later",
    452: "452 4.3.1 Insufficient system storage, try again later",
}


class Capture:
    """aiosmtpd handler: applies the configured refusals and records accepted messages."""

    def __init__(self, out, reject_rcpt, tempfail, tempfail_at, tempfail_count, deny_relay=None,
                 sender_unknown=None, plain_refusal=None):
        """Keeps the output path and the refusal rules."""
        self.out = out
        self.reject_rcpt = reject_rcpt
        self.deny_relay = deny_relay
        self.sender_unknown = sender_unknown
        self.plain_refusal = plain_refusal
        self.tempfail = tempfail
        self.tempfail_at = tempfail_at
        self.tempfail_left = tempfail_count if tempfail_count > 0 else None
        self.sequence = 0

    def _tempfail_now(self, stage, server):
        """Returns the temporary failure reply due at stage, or None; 421 also hangs up."""
        if self.tempfail is None or stage != self.tempfail_at:
            return None
        if self.tempfail_left is not None:
            if self.tempfail_left == 0:
                return None
            self.tempfail_left -= 1
        if self.tempfail == 421:
            asyncio.get_running_loop().call_soon(server.transport.close)
        return TEMPFAIL_TEXT[self.tempfail]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        """Accepts the sender unless a temporary failure is due at MAIL."""
        refusal = self._tempfail_now("mail", server)
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        """Refuses recipients matching --reject-rcpt (550 5.1.1), --deny-relay (550 5.7.1), --sender-unknown
        (550 5.1.0 about the sender, as Postfix answers at RCPT TO) or --plain-refusal (550 without an
        enhanced status code, as Exim refuses relaying), else accepts them."""
        if self.reject_rcpt and self.reject_rcpt.search(address):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if self.deny_relay and self.deny_relay.search(address):
            return f"550 5.7.1 <{address}>: Relay access denied"
        if self.sender_unknown and self.sender_unknown.search(address):
            return f"550 5.1.0 <{envelope.mail_from}>: Sender address rejected: User unknown in virtual mailbox table"
        if self.plain_refusal and self.plain_refusal.search(address):
            return "550 relay not permitted"
        refusal = self._tempfail_now("rcpt", server)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        """Appends the message as a JSON line, then answers 250 with a queue id."""
        refusal = self._tempfail_now("data", server)
        if refusal:
            return refusal
        self.sequence += 1
        queue_id = f"DOUBLE{self.sequence:06d}"
        record = describe(session, envelope, queue_id)
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return f"250 2.0.0 OK: queued as {queue_id}"


def part_text(msg, subtype):
    """Returns the decoded text/<subtype> body of msg, or None."""
    part = msg.get_body(preferencelist=(subtype,))
    return part.get_content() if part is not None else None


def describe(session, envelope, queue_id):
    """Builds the JSON record of one accepted message."""
    auth = session.auth_data if session.authenticated else None
    record = {
        "queue_id": queue_id,
        "received_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "peer": "%s:%s" % tuple(session.peer[:2]),
        "helo": session.host_name,
        "tls": session.ssl is not None,
        "auth_user": auth.login.decode("utf-8", "replace") if isinstance(auth, LoginPassword) else None,
        "mail_from": envelope.mail_from,
        "rcpt_tos": list(envelope.rcpt_tos),
        "size": len(envelope.content),
    }
    try:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        headers = {}
        for name, value in msg.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else str(value)
        record.update({
            "headers": headers,
            "subject": msg.get("Subject"),
            "from": msg.get("From"),
            "to": msg.get("To"),
            "message_id": msg.get("Message-ID"),
            "text": part_text(msg, "plain"),
            "html": part_text(msg, "html"),
            "attachments": [p.get_filename() for p in msg.iter_attachments()],
        })
    except Exception as error:  # a malformed message is still recorded, with the reason
        record["parse_error"] = f"{type(error).__name__}: {error}"
    return record


def make_authenticator(username, password):
    """Returns an aiosmtpd authenticator accepting only username/password (PLAIN or LOGIN)."""
    want_user, want_password = username.encode(), password.encode()

    def authenticate(server, session, envelope, mechanism, auth_data):
        """Compares the presented login and password in constant time."""
        ok = (isinstance(auth_data, LoginPassword)
              and hmac.compare_digest(auth_data.login, want_user)
              and hmac.compare_digest(auth_data.password, want_password))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate


def parse_args():
    """Parses the command line."""
    ap = argparse.ArgumentParser(description="SMTP test double for notiflow")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    ap.add_argument("--out", required=True, help="file that accepted messages are appended to, one JSON line each")
    ap.add_argument("--config", help='JSON file whose "smtp" object gives username and password')
    ap.add_argument("--username", help="AUTH user (overrides --config)")
    ap.add_argument("--password", help="AUTH password (overrides --config)")
    ap.add_argument("--cert", help="PEM certificate offered with STARTTLS")
    ap.add_argument("--key", help="PEM private key of --cert")
    ap.add_argument("--require-starttls", action="store_true", help="refuse everything but EHLO/STARTTLS/QUIT before TLS")
    ap.add_argument("--auth-require-tls", action="store_true", help="refuse AUTH before STARTTLS")
    ap.add_argument("--reject-rcpt", type=re.compile, metavar="REGEX", help="answer 550 to recipients matching REGEX")
    ap.add_argument("--deny-relay", type=re.compile, metavar="REGEX",
                    help="answer 550 5.7.1 (relay denied: the sender's fault, not the address's) to recipients matching REGEX")
    ap.add_argument("--sender-unknown", type=re.compile, metavar="REGEX",
                    help="answer 550 5.1.0 (the sender's address is unknown) to recipients matching REGEX")
    ap.add_argument("--plain-refusal", type=re.compile, metavar="REGEX",
                    help="answer 550 without an enhanced status code to recipients matching REGEX")
    ap.add_argument("--tempfail", type=int, choices=sorted(TEMPFAIL_TEXT), help="answer this temporary failure code")
    ap.add_argument("--tempfail-at", choices=("mail", "rcpt", "data"), default="data", help="stage that fails (default data)")
    ap.add_argument("--tempfail-count", type=int, default=0, help="fail only the first N times (0 = always)")
    ap.add_argument("--verbose", action="store_true", help="log the SMTP dialogue to stderr")
    args = ap.parse_args()
    if (args.cert is None) != (args.key is None):
        ap.error("--cert and --key go together")
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            smtp = json.load(f).get("smtp", {})
        args.username = args.username or smtp.get("username")
        args.password = args.password or smtp.get("password")
    if (args.username is None) != (args.password is None):
        ap.error("give both a username and a password, or neither")
    return args


async def serve(args):
    """Listens on 127.0.0.1 until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    handler = Capture(args.out, args.reject_rcpt, args.tempfail, args.tempfail_at, args.tempfail_count,
                      args.deny_relay, args.sender_unknown, args.plain_refusal)
    auth = make_authenticator(args.username, args.password) if args.username else None

    def new_session():
        """Creates the SMTP protocol object of one connection."""
        return SMTP(handler, hostname="smtp-double.test", ident="notiflow smtp double",
                    tls_context=tls, require_starttls=args.require_starttls,
                    auth_required=auth is not None, auth_require_tls=args.auth_require_tls,
                    authenticator=auth, enable_SMTPUTF8=True, loop=loop)

    server = await loop.create_server(new_session, host="127.0.0.1", port=args.port)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main():
    """Runs the double."""
    args = parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.ERROR)
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
