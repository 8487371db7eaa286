"""The simulated chain against an independent Cosmos library, cosmpy 0.12.2, both ways.

1. cosmpy reads the simulator's accounts and balances with its strict protobuf-JSON REST clients, builds
   and signs a MsgSend (SIGN_MODE_DIRECT) and broadcasts it: CheckTx accepts it, a block applies it, the
   balances move by the amount and the fee, the sequence advances and the public key is on chain; a
   replay of its sequence is refused with code 32.
2. A transaction the gateway built (RUST_TX_B64) decodes with cosmpy's protobuf types into the transfer
   the test asked for and its signature verifies, with cosmpy's key type, over the sign doc rebuilt from
   its parts."""
import base64
import hashlib
import os
import time

import httpx
from cosmpy.aerial.tx import SigningCfg, Transaction, TxFee
from cosmpy.auth.rest_client import AuthRestClient
from cosmpy.bank.rest_client import BankRestClient
from cosmpy.common.rest_client import RestClient
from cosmpy.crypto.address import Address
from cosmpy.crypto.keypairs import PrivateKey, PublicKey
from cosmpy.protos.cosmos.auth.v1beta1.auth_pb2 import BaseAccount
from cosmpy.protos.cosmos.auth.v1beta1.query_pb2 import QueryAccountRequest
from cosmpy.protos.cosmos.bank.v1beta1.query_pb2 import QueryBalanceRequest
from cosmpy.protos.cosmos.bank.v1beta1.tx_pb2 import MsgSend
from cosmpy.protos.cosmos.base.v1beta1.coin_pb2 import Coin
from cosmpy.protos.cosmos.crypto.secp256k1.keys_pb2 import PubKey
from cosmpy.protos.cosmos.tx.v1beta1.service_pb2 import BroadcastMode, BroadcastTxRequest
from cosmpy.protos.cosmos.tx.v1beta1.tx_pb2 import AuthInfo, SignDoc, TxBody, TxRaw
from cosmpy.tx.rest_client import TxRestClient

rest_url = os.environ["CHAIN_REST_URL"]  # http://127.0.0.1:port/chain-api
chain_id = os.environ["CHAIN_ID"]
denom = "ngonka"
key = PrivateKey(bytes.fromhex(os.environ["COSMPY_KEY_HEX"]))
me = str(Address(key.public_key, prefix="gonka"))
to = os.environ["RECIPIENT"]

rest = RestClient(rest_url)
auth, bank, txs = AuthRestClient(rest), BankRestClient(rest), TxRestClient(rest)


def account(address):
    any_account = auth.Account(QueryAccountRequest(address=address)).account
    base = BaseAccount()
    assert any_account.Unpack(base), any_account
    return base


def balance(address):
    return int(bank.Balance(QueryBalanceRequest(address=address, denom=denom)).balance.amount)


def wait_included(tx_hash):
    for _ in range(200):
        r = httpx.get(f"{rest_url}/cosmos/tx/v1beta1/txs/{tx_hash}")
        if r.status_code == 200:
            return r.json()["tx_response"]
        assert r.status_code == 404, (r.status_code, r.text)
        time.sleep(0.05)
    raise AssertionError(f"{tx_hash} never included")


def signed_send(sequence, account_number, amount, fee):
    tx = Transaction()
    tx.add_message(MsgSend(from_address=me, to_address=to, amount=[Coin(denom=denom, amount=str(amount))]))
    tx.seal(SigningCfg.direct(key.public_key, sequence), fee=TxFee(amount=f"{fee}{denom}", gas_limit=200_000), memo="cosmpy")
    tx.sign(key, chain_id, account_number)  # cosmpy's default: a random (not RFC 6979) nonce
    tx.complete()
    return tx.tx.SerializeToString()


def broadcast(tx_bytes):
    r = txs.BroadcastTx(BroadcastTxRequest(tx_bytes=tx_bytes, mode=BroadcastMode.BROADCAST_MODE_SYNC))
    return r.tx_response


# 1. cosmpy → the simulator.
before = account(me)
assert before.address == me and before.sequence == 0, before
assert not before.pub_key.value, "no public key before the first transaction"
start_me, start_to = balance(me), balance(to)
raw = signed_send(before.sequence, before.account_number, 12_345, 100)
resp = broadcast(raw)
assert resp.code == 0, resp
assert resp.txhash == hashlib.sha256(raw).hexdigest().upper(), resp
included = wait_included(resp.txhash)
assert included["code"] == 0 and int(included["height"]) > 0, included
assert balance(me) == start_me - 12_345 - 100
assert balance(to) == start_to + 12_345
after = account(me)
assert after.sequence == 1 and after.account_number == before.account_number, after
published = PubKey()
assert after.pub_key.Unpack(published)
assert published.key == key.public_key.public_key_bytes
replay = broadcast(signed_send(0, before.account_number, 1, 100))
assert replay.code == 32 and replay.codespace == "sdk", replay
assert replay.raw_log == "account sequence mismatch, expected 1, got 0: incorrect account sequence", replay.raw_log
bad_chain = TxRaw.FromString(signed_send(1, before.account_number + 1, 1, 100))
assert broadcast(bad_chain.SerializeToString()).code == 4

# 2. The gateway's transaction → cosmpy.
ours = base64.b64decode(os.environ["RUST_TX_B64"])
raw = TxRaw.FromString(ours)
assert raw.SerializeToString() == ours, "canonical: cosmpy re-encodes the same bytes"
body, info = TxBody.FromString(raw.body_bytes), AuthInfo.FromString(raw.auth_info_bytes)
assert len(body.messages) == 1 and body.messages[0].type_url == "/cosmos.bank.v1beta1.MsgSend"
msg = MsgSend()
assert body.messages[0].Unpack(msg)
assert (msg.from_address, msg.to_address) == (os.environ["RUST_FROM"], os.environ["RUST_TO"]), msg
assert [(c.denom, c.amount) for c in msg.amount] == [(denom, os.environ["RUST_AMOUNT"])], msg.amount
assert body.memo == os.environ["RUST_MEMO"]
signer = info.signer_infos[0]
assert signer.sequence == int(os.environ["RUST_SEQUENCE"]) and signer.mode_info.single.mode == 1, signer
assert [(c.denom, c.amount) for c in info.fee.amount] == [(denom, os.environ["RUST_FEE"])] and info.fee.gas_limit == 200_000
pub = PubKey()
assert signer.public_key.type_url == "/cosmos.crypto.secp256k1.PubKey" and signer.public_key.Unpack(pub)
their_key = PublicKey(pub.key)
assert str(Address(their_key, prefix="gonka")) == msg.from_address, "the key is the sender's"
doc = SignDoc(body_bytes=raw.body_bytes, auth_info_bytes=raw.auth_info_bytes, chain_id=chain_id,
              account_number=int(os.environ["RUST_ACCOUNT_NUMBER"])).SerializeToString()
sig = raw.signatures[0]
assert len(sig) == 64 and their_key.verify(doc, sig), "the gateway's signature verifies with cosmpy"
n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
assert int.from_bytes(sig[32:], "big") <= n // 2, "low S"
wrong = SignDoc(body_bytes=raw.body_bytes, auth_info_bytes=raw.auth_info_bytes, chain_id=chain_id + "x",
                account_number=int(os.environ["RUST_ACCOUNT_NUMBER"])).SerializeToString()
assert not their_key.verify(wrong, sig)
print("OK")
