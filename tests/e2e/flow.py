#!/usr/bin/env python3
"""timproxy e2e flows against the homeservers started by homeservers.sh.

Run with the harness venv's python (it has matrix-nio):

    "$E2E_VENV/bin/python" flow.py happy
    "$E2E_VENV/bin/python" flow.py tim-rules            (TIM client rules; passes only through timproxy)
    "$E2E_VENV/bin/python" flow.py blocked-invite
    "$E2E_VENV/bin/python" flow.py refused --from hs3      (needs `homeservers.sh start ... --hs3`)

Reads $E2E_DIR/e2e.env (E2E_DIR defaults to ./.e2e; run.sh sets it) or --env FILE. Users are registered with
the admin register API on each Synapse's INTERNAL port (a proxy blocks admin paths); everything
else goes through the CLIENT URLs (through the inbound proxies in --via-proxy mode). Each run
uses fresh user names, so flows can be repeated against the same servers.

Prints one line per check and ends with `e2e: N passed, M failed`; exit 0 only if nothing failed.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import io
import json
import os
import secrets
import ssl
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    LoginResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)

PERMISSION_CONFIG_TYPE = "de.gematik.tim.account.permissionconfig.pro.v1"
ROOM_VERSION = "10"
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"e2e: [{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


class Fail(Exception):
    """A check did not hold."""


def load_env(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip('"').strip("'")
    return env


@dataclass
class Homeserver:
    key: str  # hs1
    server_name: str  # hs1.test:8448
    client_url: str
    internal_url: str
    shared_secret: str


@dataclass
class User:
    hs: Homeserver
    localpart: str
    password: str
    user_id: str = ""
    client: AsyncClient | None = None
    # every timeline event seen by this user's syncs, per room (so no wait misses an event)
    events: dict[str, list] = field(default_factory=dict)
    invites: set[str] = field(default_factory=set)


class Flow:
    def __init__(self, env: dict[str, str], timeout: float):
        self.env = env
        self.timeout = timeout
        self.passed = 0
        self.failed = 0
        self.run_id = secrets.token_hex(3)
        cafile = env.get("E2E_CA_CERT")
        self.ssl_ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
        self.http: aiohttp.ClientSession | None = None
        self.users: list[User] = []

    # --- bookkeeping ---------------------------------------------------------------------------
    async def check(self, name: str, fn, timeout: float | None = None) -> bool:
        """Run one check with a bound; log PASS/FAIL; never raises."""
        limit = timeout or self.timeout
        start = time.monotonic()
        try:
            detail = await asyncio.wait_for(fn(), limit)
        except asyncio.TimeoutError:
            self.failed += 1
            log(f"FAIL {name}: timed out after {limit:.0f}s")
            return False
        except Fail as e:
            self.failed += 1
            log(f"FAIL {name}: {e}")
            return False
        except Exception as e:  # noqa: BLE001 — report, don't crash
            self.failed += 1
            log(f"FAIL {name}: {type(e).__name__}: {e}")
            return False
        self.passed += 1
        log(f"PASS {name} ({time.monotonic() - start:.1f}s){': ' + detail if detail else ''}")
        return True

    def hs(self, key: str) -> Homeserver:
        K = key.upper()
        if f"{K}_SERVER_NAME" not in self.env:
            raise Fail(f"{key} is not in e2e.env (E2E_SERVERS={self.env.get('E2E_SERVERS')}); "
                       f"start the homeservers with the right flags")
        return Homeserver(key, self.env[f"{K}_SERVER_NAME"], self.env[f"{K}_CLIENT_URL"].rstrip("/"),
                          self.env[f"{K}_INTERNAL_URL"].rstrip("/"), self.env[f"{K}_REGISTRATION_SHARED_SECRET"])

    def ssl_for(self, url: str):
        return self.ssl_ctx if url.startswith("https:") else None

    # --- raw HTTP helpers ----------------------------------------------------------------------
    async def request(self, method: str, url: str, token: str | None = None, body=None) -> tuple[int, object]:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, url, json=body, headers=headers, ssl=self.ssl_for(url)) as r:
            data = await r.read()
            try:
                return r.status, json.loads(data) if data else None
            except ValueError:
                return r.status, data

    async def register(self, user: User) -> None:
        """Shared-secret registration (Synapse admin API) on the internal port."""
        url = f"{user.hs.internal_url}/_synapse/admin/v1/register"
        status, body = await self.request("GET", url)
        if status != 200:
            raise Fail(f"GET {url} -> {status} {body}")
        nonce = body["nonce"]
        mac = hmac.new(user.hs.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), user.localpart.encode(), user.password.encode(), b"notadmin"]))
        status, body = await self.request("POST", url, body={
            "nonce": nonce, "username": user.localpart, "password": user.password,
            "admin": False, "mac": mac.hexdigest()})
        if status != 200:
            raise Fail(f"register {user.localpart} on {user.hs.key} -> {status} {body}")
        user.user_id = body["user_id"]

    async def login(self, user: User) -> None:
        cfg = AsyncClientConfig(max_limit_exceeded=2, max_timeouts=0, request_timeout=self.timeout + 30,
                                encryption_enabled=False, store_sync_tokens=False)
        client = AsyncClient(user.hs.client_url, user.user_id, config=cfg, ssl=self.ssl_for(user.hs.client_url))
        user.client = client
        resp = await client.login(user.password, device_name="timproxy-e2e")
        if not isinstance(resp, LoginResponse):
            raise Fail(f"login {user.user_id} via {user.hs.client_url}: {resp}")
        await self.sync_once(user, 0)  # initial sync: later waits are incremental

    async def new_users(self, *specs: tuple[str, str]) -> list[User]:
        users = [User(self.hs(key), f"{name}-{self.run_id}", secrets.token_urlsafe(12)) for name, key in specs]
        for u in users:
            await self.register(u)
        for u in users:
            await self.login(u)
        self.users.extend(users)
        return users

    # --- sync helpers --------------------------------------------------------------------------
    async def sync_once(self, user: User, timeout_ms: int = 2000) -> None:
        resp = await user.client.sync(timeout=timeout_ms)
        if not isinstance(resp, SyncResponse):
            raise Fail(f"sync for {user.user_id}: {resp}")
        for room_id, room in resp.rooms.join.items():
            user.events.setdefault(room_id, []).extend(room.timeline.events)
        user.invites.update(resp.rooms.invite.keys())
        for room_id in resp.rooms.join:
            user.invites.discard(room_id)

    async def wait_for(self, user: User, pred) -> None:
        """Sync until pred() holds (the caller's check() bounds the time)."""
        while not pred():
            await self.sync_once(user)

    def saw_message(self, user: User, room_id: str, sender: str, body: str) -> bool:
        return any(isinstance(e, RoomMessageText) and e.sender == sender and e.body == body
                   for e in user.events.get(room_id, []))

    async def create_room(self, user: User, **kw) -> str:
        resp = await user.client.room_create(room_version=ROOM_VERSION, **kw)
        if not isinstance(resp, RoomCreateResponse):
            raise Fail(f"createRoom by {user.user_id}: {resp}")
        return resp.room_id

    # --- flows ---------------------------------------------------------------------------------
    async def versions(self) -> None:
        for key in self.env.get("E2E_SERVERS", "hs1 hs2").split():
            if key == "hs3":
                continue
            hs = self.hs(key)

            async def fetch(hs=hs):
                status, body = await self.request("GET", f"{hs.client_url}/_matrix/client/versions")
                if status != 200 or not isinstance(body, dict) or "versions" not in body:
                    raise Fail(f"-> {status} {body!r:.200}")
                return f"{hs.client_url}: versions={body['versions']}"
            await self.check(f"GET /_matrix/client/versions on {key}", fetch)

    async def flow_happy(self) -> None:
        await self.versions()
        st: dict[str, object] = {}

        async def users():
            st["alice"], st["bob"] = await self.new_users(("alice", "hs1"), ("bob", "hs2"))
            return f"{st['alice'].user_id} via {st['alice'].hs.client_url}, {st['bob'].user_id} via {st['bob'].hs.client_url}"
        if not await self.check("register + login alice@hs1, bob@hs2", users):
            return
        alice: User = st["alice"]
        bob: User = st["bob"]

        async def create():
            st["room"] = await self.create_room(alice, name="timproxy e2e", is_direct=False)
            return f"{st['room']} (room_version {ROOM_VERSION})"
        if not await self.check("alice creates a room (room_version 10)", create):
            return
        room = st["room"]

        async def invite():
            resp = await alice.client.room_invite(room, bob.user_id)
            if not isinstance(resp, RoomInviteResponse):
                raise Fail(f"{resp} (HTTP {resp.transport_response.status if resp.transport_response else '?'})")
            await self.wait_for(bob, lambda: room in bob.invites)
            return "bob sees the invite"
        if not await self.check("alice invites bob (hs1 -> hs2 federation)", invite):
            return

        async def join():
            resp = await bob.client.join(room)
            if not isinstance(resp, JoinResponse):
                raise Fail(str(resp))
            return "remote join via hs1"
        if not await self.check("bob joins (hs2 -> hs1 make_join/send_join)", join):
            return

        async def message(sender: User, receiver: User, text: str):
            resp = await sender.client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": text})
            if not isinstance(resp, RoomSendResponse):
                raise Fail(f"send: {resp}")
            await self.wait_for(receiver, lambda: self.saw_message(receiver, room, sender.user_id, text))
            return f"{resp.event_id} seen by {receiver.user_id}"
        a_text = f"hello from alice {self.run_id}"
        b_text = f"hello from bob {self.run_id}"
        await self.check("alice -> bob message", lambda: message(alice, bob, a_text))
        await self.check("bob -> alice message", lambda: message(bob, alice, b_text))

        async def media():
            data = f"timproxy e2e media {self.run_id}\n".encode() + os.urandom(2048)
            resp, _ = await alice.client.upload(io.BytesIO(data), content_type="application/octet-stream",
                                                filename="e2e.bin", filesize=len(data))
            if not isinstance(resp, UploadResponse):
                raise Fail(f"upload on hs1: {resp}")
            server, media_id = resp.content_uri[len("mxc://"):].split("/", 1)
            url = (f"{bob.hs.client_url}/_matrix/client/v1/media/download/"
                   f"{quote(server, safe=':')}/{quote(media_id)}")
            status, body = await self.request("GET", url, token=bob.client.access_token)
            if status != 200:
                raise Fail(f"download on hs2 {url} -> {status} {body!r:.200}")
            if body != data:
                raise Fail(f"downloaded {len(body)} bytes differ from the {len(data)} uploaded")
            return f"{resp.content_uri}: {len(data)} bytes identical (hs2 fetched it over federation)"
        await self.check("media: upload on hs1, download on hs2", media)

    async def flow_tim_rules(self) -> None:
        """TIM client rules as a Matrix client meets them through the inbound proxy of hs1."""
        st: dict[str, object] = {}

        async def users():
            st["alice"], st["bob"], st["dave"] = await self.new_users(("alice", "hs1"), ("bob", "hs2"), ("dave", "hs2"))
            return ", ".join(u.user_id for u in (st["alice"], st["bob"], st["dave"]))
        if not await self.check("register + login alice@hs1, bob@hs2, dave@hs2", users):
            return
        alice: User = st["alice"]
        hs = alice.hs
        tok = alice.client.access_token

        def refused(status, body, what: str, want=None) -> str:
            if 200 <= status < 300:
                raise Fail(f"{what} succeeded (HTTP {status}); expected a TIM rule to refuse it")
            if want and status not in want:
                raise Fail(f"{what} -> HTTP {status} {body!r:.160}; expected {want}")
            if not (isinstance(body, dict) and str(body.get("errcode", "")).startswith("M_")):
                raise Fail(f"{what} -> HTTP {status} without a Matrix error body: {body!r:.160}")
            return f"HTTP {status} {body.get('errcode')}: {body.get('error', '')!s:.80}"

        async def versions():
            status, body = await self.request("GET", f"{hs.client_url}/_matrix/client/versions")
            if status != 200 or not isinstance(body, dict):
                raise Fail(f"-> {status} {body!r:.160}")
            newer = [v for v in body.get("versions", []) if v.startswith("v1.") and int(v[3:]) > 11]
            if newer or body.get("unstable_features"):
                raise Fail(f"versions newer than v1.11 {newer} or unstable_features {body.get('unstable_features')!r:.80} leaked")
            return f"versions={body.get('versions')}"
        await self.check("/versions lists nothing newer than v1.11", versions)

        cr = f"{hs.client_url}/_matrix/client/v3/createRoom"

        async def v12():
            status, body = await self.request("POST", cr, tok, {"room_version": "12"})
            return refused(status, body, "createRoom room_version 12", (400, 403))
        await self.check("createRoom with room version 12 is refused", v12)

        async def default_version():
            status, body = await self.request("POST", cr, tok, {"name": "default version"})
            if status != 200:
                raise Fail(f"createRoom without room_version -> {status} {body!r:.160}")
            st["room"] = room = body["room_id"]
            status, create = await self.request(
                "GET", f"{hs.client_url}/_matrix/client/v3/rooms/{quote(room)}/state/m.room.create/", tok)
            if status != 200 or create.get("room_version") != "10":
                raise Fail(f"m.room.create -> {status} {create!r:.160}; expected room_version 10")
            return f"{room} has room_version 10"
        await self.check("createRoom without room_version gets version 10", default_version)

        async def two_invitees():
            status, body = await self.request("POST", cr, tok, {"room_version": "10",
                                                                 "invite": [st["bob"].user_id, st["dave"].user_id]})
            return refused(status, body, "createRoom with two invitees", (403,))
        await self.check("createRoom inviting two users is refused (403)", two_invitees)

        room = st.get("room")
        if not room:
            return
        rbase = f"{hs.client_url}/_matrix/client/v3/rooms/{quote(room)}"

        async def join_public():
            status, body = await self.request("PUT", f"{rbase}/state/m.room.join_rules/", tok, {"join_rule": "public"})
            return refused(status, body, "join_rules public")
        await self.check("setting join_rule public is refused", join_public)

        async def thread():
            status, body = await self.request("PUT", f"{rbase}/send/m.room.message/root{self.run_id}", tok,
                                              {"msgtype": "m.text", "body": "thread root"})
            if status != 200:
                raise Fail(f"send root -> {status} {body!r:.160}")
            status, body = await self.request("PUT", f"{rbase}/send/m.room.message/t{self.run_id}", tok, {
                "msgtype": "m.text", "body": "thread reply",
                "m.relates_to": {"rel_type": "m.thread", "event_id": body["event_id"]}})
            return refused(status, body, "thread message")
        await self.check("a thread message is refused", thread)

        async def reactions():
            status, body = await self.request("PUT", f"{rbase}/send/m.room.message/m{self.run_id}", tok,
                                              {"msgtype": "m.text", "body": "react to me"})
            if status != 200:
                raise Fail(f"send -> {status} {body!r:.160}")
            target = body["event_id"]
            rel = lambda key: {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}
            status, body = await self.request("PUT", f"{rbase}/send/m.reaction/r1{self.run_id}", tok, rel("\U0001F44D"))
            if status != 200:
                raise Fail(f"single-emoji reaction -> {status} {body!r:.160}; expected 200")
            status, body = await self.request("PUT", f"{rbase}/send/m.reaction/r2{self.run_id}", tok, rel("hello"))
            return "single emoji allowed; " + refused(status, body, "text reaction")
        await self.check("single-emoji reaction allowed, text reaction refused", reactions)

        async def guest():
            status, body = await self.request("POST", f"{hs.client_url}/_matrix/client/v3/register?kind=guest", None, {})
            detail = refused(status, body, "guest registration", (403,))
            if body.get("errcode") != "M_FORBIDDEN":
                raise Fail(f"guest registration -> {detail}; expected M_FORBIDDEN")
            return detail
        await self.check("guest registration is refused (403 M_FORBIDDEN)", guest)

    async def flow_blocked_invite(self) -> None:
        st: dict[str, object] = {}

        async def users():
            st["alice"], st["bob"] = await self.new_users(("alice", "hs1"), ("bob", "hs2"))
            return f"{st['alice'].user_id}, {st['bob'].user_id}"
        if not await self.check("register + login alice@hs1, bob@hs2", users):
            return
        alice: User = st["alice"]
        bob: User = st["bob"]

        async def block():
            url = (f"{bob.hs.client_url}/_matrix/client/v3/user/{quote(bob.user_id)}"
                   f"/account_data/{PERMISSION_CONFIG_TYPE}")
            status, body = await self.request("PUT", url, token=bob.client.access_token,
                                              body={"defaultSetting": "block all"})
            if status != 200:
                raise Fail(f"PUT account data -> {status} {body}")
            return f"{PERMISSION_CONFIG_TYPE} = {{\"defaultSetting\": \"block all\"}}"
        if not await self.check("bob blocks everyone (permission config)", block):
            return

        async def create():
            st["room"] = await self.create_room(alice, name="timproxy e2e blocked")
            return str(st["room"])
        if not await self.check("alice creates a room (room_version 10)", create):
            return
        room = st["room"]

        async def invite():
            resp = await alice.client.room_invite(room, bob.user_id)
            status = resp.transport_response.status if resp.transport_response else None
            if isinstance(resp, RoomInviteResponse):
                raise Fail("invite succeeded (HTTP 200), expected 403")
            if status != 403:
                raise Fail(f"invite failed with HTTP {status} {resp}, expected 403")
            return f"HTTP 403 {resp.status_code}: {resp.message}"
        await self.check("alice's invite to bob is rejected with 403", invite)

        async def no_invite():
            await self.sync_once(bob, 2000)
            if room in bob.invites:
                raise Fail("bob received the invite")
            return "bob has no invite"
        await self.check("bob did not receive the invite", no_invite)

    async def flow_refused(self, origin: str) -> None:
        limit = float(os.environ.get("E2E_REFUSED_TIMEOUT", "60"))
        st: dict[str, object] = {}

        async def users():
            st["carol"], st["alice"], st["bob"] = await self.new_users(("carol", origin), ("alice", "hs1"),
                                                                       ("bob", "hs2"))
            return ", ".join(u.user_id for u in (st["carol"], st["alice"], st["bob"]))
        if not await self.check(f"register + login carol@{origin}, alice@hs1, bob@hs2", users):
            return
        carol: User = st["carol"]
        alice: User = st["alice"]
        bob: User = st["bob"]

        def expect_failure(resp, what: str) -> str:
            status = resp.transport_response.status if getattr(resp, "transport_response", None) else None
            if status is not None and 200 <= status < 300:
                raise Fail(f"{what} succeeded (HTTP {status}); expected it to be refused")
            return f"refused: HTTP {status} {getattr(resp, 'status_code', '')} {getattr(resp, 'message', '')}".rstrip()

        async def carol_invites_bob():
            room = await self.create_room(carol, name="e2e from outside the federation")
            return expect_failure(await carol.client.room_invite(room, bob.user_id),
                                  f"invite {origin} -> hs2")
        await self.check(f"{origin} user invites bob@hs2 -> refused", carol_invites_bob, limit)

        async def carol_joins_alice_room():
            room = await self.create_room(alice, name="e2e public")
            # make it joinable by anyone, so only federation policy can stop carol
            status, body = await self.request(
                "PUT", f"{alice.hs.client_url}/_matrix/client/v3/rooms/{quote(room)}/state/m.room.join_rules/",
                token=alice.client.access_token, body={"join_rule": "public"})
            note = "" if status == 200 else f" (note: join_rule public was rejected with {status}, so hs1 may refuse too)"
            status, body = await self.request(
                "POST", f"{carol.hs.client_url}/_matrix/client/v3/join/{quote(room)}"
                        f"?server_name={quote(alice.hs.server_name)}",
                token=carol.client.access_token, body={})
            if 200 <= status < 300:
                raise Fail(f"join {origin} -> hs1 succeeded (HTTP {status}); expected it to be refused")
            return f"refused: HTTP {status} {body!r:.160}{note}"
        await self.check(f"{origin} user joins a public room on hs1 -> refused", carol_joins_alice_room, limit)

        async def alice_invites_carol():
            room = await self.create_room(alice, name="e2e invite outside")
            return expect_failure(await alice.client.room_invite(room, carol.user_id), f"invite hs1 -> {origin}")
        await self.check(f"alice@hs1 invites the {origin} user -> refused", alice_invites_carol, limit)

    async def run(self, flow: str, origin: str) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout + 30)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as http:
            self.http = http
            try:
                if flow == "happy":
                    await self.flow_happy()
                elif flow == "blocked-invite":
                    await self.flow_blocked_invite()
                elif flow == "tim-rules":
                    await self.flow_tim_rules()
                else:
                    await self.flow_refused(origin)
            finally:
                for u in self.users:
                    if u.client:
                        await u.client.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("flow", choices=["happy", "tim-rules", "blocked-invite", "refused"])
    p.add_argument("--from", dest="origin", default="hs3", help="refused: the non-federated server (default hs3)")
    p.add_argument("--env", default=os.path.join(os.environ.get("E2E_DIR", "./.e2e"), "e2e.env"))
    p.add_argument("--timeout", type=float, default=float(os.environ.get("E2E_STEP_TIMEOUT", "30")),
                   help="seconds per check (default 30, env E2E_STEP_TIMEOUT)")
    args = p.parse_args()
    try:
        env = load_env(args.env)
    except OSError as e:
        print(f"e2e: error: cannot read {args.env}: {e} (run homeservers.sh start first)", file=sys.stderr)
        print("e2e: 0 passed, 1 failed")
        return 1
    log(f"flow {args.flow} in {env.get('E2E_MODE', '?')} mode (servers: {env.get('E2E_SERVERS')})")
    flow = Flow(env, args.timeout)
    try:
        asyncio.run(flow.run(args.flow, args.origin))
    except Fail as e:
        flow.failed += 1
        log(f"FAIL {e}")
    log(f"done in {time.monotonic() - T0:.1f}s")
    print(f"e2e: {flow.passed} passed, {flow.failed} failed", flush=True)
    return 0 if flow.failed == 0 and flow.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
