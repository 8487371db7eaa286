"""A GNK deposit made with an independent Cosmos library, cosmpy 0.12.2: the script reads the depositing
account over the chain's REST API with cosmpy's clients, builds and signs a MsgSend (SIGN_MODE_DIRECT) of
AMOUNT ngonka to DEPOSIT_ADDRESS, broadcasts it and waits for its block. It prints `TX_HASH=<hash>`; the
Rust test then waits for the gateway to credit it."""
import os
import time

import httpx
from cosmpy.aerial.tx import SigningCfg, Transaction, TxFee
from cosmpy.auth.rest_client import AuthRestClient
from cosmpy.common.rest_client import RestClient
from cosmpy.crypto.address import Address
from cosmpy.crypto.keypairs import PrivateKey
from cosmpy.protos.cosmos.auth.v1beta1.auth_pb2 import BaseAccount
from cosmpy.protos.cosmos.auth.v1beta1.query_pb2 import QueryAccountRequest
from cosmpy.protos.cosmos.bank.v1beta1.tx_pb2 import MsgSend
from cosmpy.protos.cosmos.base.v1beta1.coin_pb2 import Coin
from cosmpy.protos.cosmos.tx.v1beta1.service_pb2 import BroadcastMode, BroadcastTxRequest
from cosmpy.tx.rest_client import TxRestClient

rest_url = os.environ["CHAIN_REST_URL"]
chain_id = os.environ["CHAIN_ID"]
denom = "ngonka"
key = PrivateKey(bytes.fromhex(os.environ["COSMPY_KEY_HEX"]))
me = str(Address(key.public_key, prefix="gonka"))
to = os.environ["DEPOSIT_ADDRESS"]
amount = int(os.environ["AMOUNT"])

rest = RestClient(rest_url)
auth, txs = AuthRestClient(rest), TxRestClient(rest)

base = BaseAccount()
assert auth.Account(QueryAccountRequest(address=me)).account.Unpack(base)

tx = Transaction()
tx.add_message(MsgSend(from_address=me, to_address=to, amount=[Coin(denom=denom, amount=str(amount))]))
tx.seal(SigningCfg.direct(key.public_key, base.sequence), fee=TxFee(amount=f"10{denom}", gas_limit=200_000),
        memo="deposit by cosmpy")
tx.sign(key, chain_id, base.account_number)
tx.complete()
r = txs.BroadcastTx(BroadcastTxRequest(tx_bytes=tx.tx.SerializeToString(), mode=BroadcastMode.BROADCAST_MODE_SYNC))
assert r.tx_response.code == 0, r.tx_response
tx_hash = r.tx_response.txhash
for _ in range(200):
    got = httpx.get(f"{rest_url}/cosmos/tx/v1beta1/txs/{tx_hash}")
    if got.status_code == 200:
        assert got.json()["tx_response"]["code"] == 0, got.text
        break
    time.sleep(0.05)
else:
    raise AssertionError(f"{tx_hash} never included")
print(f"TX_HASH={tx_hash}")
print("OK")
