"""Generates tests/data/chain_vectors.json: MsgSend transactions built and signed by cosmpy 0.12.2
(SIGN_MODE_DIRECT, deterministic RFC 6979 signatures, low S), which the gateway's encoder must reproduce
byte for byte. Run once with the test venv: `target/test-venv/bin/python tests/python/chain_vectors.py`."""
import base64
import hashlib
import json
import sys

from cosmpy.aerial.tx import SigningCfg, Transaction, TxFee
from cosmpy.crypto.address import Address
from cosmpy.crypto.keypairs import PrivateKey
from cosmpy.protos.cosmos.bank.v1beta1.tx_pb2 import MsgSend
from cosmpy.protos.cosmos.base.v1beta1.coin_pb2 import Coin

CASES = [
    # key, to, amount, fee, gas, memo, sequence, account number, chain id, denom
    ("5f1d3c2b4a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff001", 1, 1_000_000_000, 0, 200_000, "", 0, 0, "gonka-mainnet", "ngonka"),
    ("8a7b6c5d4e3f201112131415161718191a1b1c1d1e1f20212223242526272829", 2, 25, 500, 100_000, "top-up dk_1", 3, 7, "gonka-mainnet", "ngonka"),
    ("0101010101010101010101010101010101010101010101010101010101010101", 3, 340282366920938463463374607431768211455, 12345678901234567890, 18446744073709551615, "é漢 ünïcode memo", 18446744073709551615, 18446744073709551615, "gonka-testnet-1", "ngonka"),
    ("7f" * 16 + "01" * 16, 4, 1, 1, 1, "x" * 300, 1, 1, "c", "ustake"),
]


def address(pk: PrivateKey) -> str:
    return str(Address(pk.public_key, prefix="gonka"))


def build(key_hex, to_index, amount, fee, gas, memo, sequence, account_number, chain_id, denom):
    pk = PrivateKey(bytes.fromhex(key_hex))
    to = address(PrivateKey(hashlib.sha256(f"chain-vector-recipient/{to_index}".encode()).digest()))
    msg = MsgSend(from_address=address(pk), to_address=to, amount=[Coin(denom=denom, amount=str(amount))])
    tx = Transaction()
    tx.add_message(msg)
    fee_amount = f"{fee}{denom}" if fee else None
    tx.seal(SigningCfg.direct(pk.public_key, sequence), fee=TxFee(amount=fee_amount, gas_limit=gas), memo=memo)
    tx.sign(pk, chain_id, account_number, deterministic=True)
    tx.complete()
    raw = tx.tx.SerializeToString()
    body = tx.tx.body.SerializeToString()
    auth = tx.tx.auth_info.SerializeToString()
    return {
        "private_key_hex": key_hex,
        "public_key_hex": pk.public_key.public_key_bytes.hex(),
        "from_address": address(pk),
        "to_address": to,
        "amount": str(amount),
        "denom": denom,
        "fee": str(fee),
        "gas_limit": str(gas),
        "memo": memo,
        "sequence": str(sequence),
        "account_number": str(account_number),
        "chain_id": chain_id,
        "body_bytes_hex": body.hex(),
        "auth_info_bytes_hex": auth.hex(),
        "signature_hex": tx.tx.signatures[0].hex(),
        "tx_bytes_b64": base64.b64encode(raw).decode(),
        "tx_hash": hashlib.sha256(raw).hexdigest().upper(),
    }


out = {
    "generator": "tests/python/chain_vectors.py with cosmpy 0.12.2",
    "vectors": [build(*c) for c in CASES],
}
json.dump(out, sys.stdout, indent=2, ensure_ascii=False)
sys.stdout.write("\n")
