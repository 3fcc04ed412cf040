"""Signs a PDF remotely through a CSC API with pyHanko's own CSC client: pyHanko
builds the PAdES signature (B-T, with a time-stamp from the given TSA), asks
credentials/authorize for a SAD bound to the exact hash it is about to sign (PIN as
the second factor), and signatures/signHash for the signature value.

usage: csc_sign.py SERVICE_URL CREDENTIAL_ID ACCESS_TOKEN PIN TSA_URL IN.pdf OUT.pdf
Exit status 0 when the signed PDF was written; the error otherwise.
"""

import asyncio
import sys

import aiohttp
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers, timestamps
from pyhanko.sign.signers import csc_signer

SHA256 = "2.16.840.1.101.3.4.2.1"


class PinAuthorization(csc_signer.CSCAuthorizationManager):
    """Explicit authorisation: the PIN and the hashes, one SAD per batch."""

    def __init__(self, session, session_info, credential_info, pin):
        super().__init__(session_info, credential_info)
        self.session = session
        self.pin = pin

    async def authorize_signature(self, hash_b64s):
        request = self.format_csc_auth_request(pin=self.pin, hash_b64s=hash_b64s)
        # CSC v2 names the algorithm of the hashes being authorised.
        request["hashAlgorithmOID"] = SHA256
        url = self.csc_session_info.endpoint_url("credentials/authorize")
        async with self.session.post(url, headers=self.auth_headers, json=request) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"credentials/authorize: HTTP {r.status} {body}")
        return self.parse_csc_auth_response(body)


async def main(service_url, credential_id, token, pin, tsa_url, source, target):
    info = csc_signer.CSCServiceSessionInfo(
        service_url=service_url,
        credential_id=credential_id,
        oauth_token=token,
        api_ver="v2",
    )
    async with aiohttp.ClientSession() as session:
        credential = await csc_signer.fetch_certs_in_csc_credential(session, info)
        if not credential.hash_pinning_required:
            raise RuntimeError("the credential should be SCAL2 (hash-bound SAD)")
        auth = PinAuthorization(session, info, credential, pin)
        signer = csc_signer.CSCSigner(session, auth_manager=auth)
        with open(source, "rb") as inf:
            writer = IncrementalPdfFileWriter(inf)
            meta = signers.PdfSignatureMetadata(
                field_name="RemoteSignature",
                md_algorithm="sha256",
                subfilter=fields.SigSeedSubFilter.PADES,
            )
            pdf_signer = signers.PdfSigner(
                meta,
                signer=signer,
                timestamper=timestamps.HTTPTimeStamper(tsa_url),
            )
            with open(target, "wb") as outf:
                await pdf_signer.async_sign_pdf(writer, output=outf)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:8]))
