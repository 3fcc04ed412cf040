"""PAdES B-LT and B-LTA judge: pyHanko validates a signature with only the data the PDF carries.

    python ltv.py ROOT.pem SIGNED.pdf

pyHanko's AdES validation of a signature with time (EN 319 102-1 5.5,
`ades_with_time_validation`) seeded with the contents of the PDF's DSS, with online
fetching of revocation data and certificates turned off: the status of every
certificate must come from the DSS: the signer's (OCSP), the issuing CA's and the
TSU's (the root's CRL). The CLI cannot express this: `sign validate` never reads the
DSS, and `sign adesverify` fetches online whenever it may.

Also checks the DSS has a /VRI entry for the signature, and reports pyHanko's
long-term (past) validation (`ades_lta_validation`), which passes only where a
document time-stamp (B-LTA) proves the DSS's data existed: the caller judges that
line by the level it asked for.

Prints the verdict and the facts behind it; exits 0 when every signature passes.
"""

import asyncio
import sys

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from pyhanko.keys import load_cert_from_pemder
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.ades import ades_lta_validation, ades_with_time_validation
from pyhanko.sign.validation.dss import DocumentSecurityStore, NoDSSFoundError
from pyhanko.sign.validation.policy_decl import (
    CertificateFetchingRule,
    LocalKnowledge,
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko.sign.validation.status import PdfSignatureStatus, format_pretty_print_details
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.registry import SimpleTrustManager
from pyhanko_certvalidator.revinfo.archival import CRLContainer, OCSPContainer


def policy(trust, ee_rule):
    return CertValidationPolicySpec(
        trust_manager=trust,
        revinfo_policy=CertRevTrustPolicy(
            RevocationCheckingPolicy(
                ee_certificate_rule=ee_rule,
                intermediate_ca_cert_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED,
            )
        ),
    )


def dss_knowledge(reader):
    """What the DSS holds, as pyHanko's local knowledge; None without a DSS."""
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        return None, None
    ocsps = [
        container
        for ref in dss.ocsps
        for container in OCSPContainer.load_multi(
            asn1_ocsp.OCSPResponse.load(ref.get_object().data)
        )
    ]
    crls = [
        CRLContainer(asn1_crl.CertificateList.load(ref.get_object().data))
        for ref in dss.crls
    ]
    certs = list(dss.load_certs())
    print(f"DSS: {len(certs)} certificates, {len(dss.ocsps)} OCSP responses, {len(crls)} CRLs")
    return dss, LocalKnowledge(known_ocsps=ocsps, known_crls=crls, known_certs=certs)


def main(root_path, pdf_path):
    trust = SimpleTrustManager.build(trust_roots=[load_cert_from_pemder(root_path)])
    passed = True
    with open(pdf_path, 'rb') as f:
        reader = PdfFileReader(f)
        dss, knowledge = dss_knowledge(reader)
        if dss is None:
            print("DSS: none")
        spec = SignatureValidationSpec(
            cert_validation_policy=policy(trust, RevocationCheckingRule.CRL_OR_OCSP_REQUIRED),
            ts_cert_validation_policy=policy(trust, RevocationCheckingRule.CRL_OR_OCSP_REQUIRED),
            revinfo_gathering_policy=RevocationInfoGatheringSpec(
                online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY,
                certificate_fetching_rule=CertificateFetchingRule.NEVER_FETCH,
            ),
            local_knowledge=knowledge or LocalKnowledge(),
        )
        signatures = reader.embedded_regular_signatures
        if not signatures:
            print("no signatures")
            passed = False
        for embedded in signatures:
            name = embedded.field_name
            key = DocumentSecurityStore.sig_content_identifier(embedded.pkcs7_content)
            has_vri = dss is not None and key in dss.vri_entries
            print(f"{name}: DSS /VRI entry {key[1:]} {'present' if has_vri else 'absent'}")
            embedded.compute_integrity_info()
            result = asyncio.run(
                ades_with_time_validation(
                    embedded.signed_data,
                    spec,
                    raw_digest=embedded.compute_digest(),
                    extra_status_kwargs=embedded.summarise_integrity_info(),
                    status_cls=PdfSignatureStatus,
                )
            )
            status = result.api_status
            if status is not None:
                print(format_pretty_print_details(status))
            print(f"{name}: best signature time {result.best_signature_time}")
            print(f"{name}: AdES indication (with time, DSS only) {result.ades_subindic}")
            long_term = asyncio.run(
                ades_lta_validation(embedded, PdfSignatureValidationSpec(spec))
            )
            print(f"{name}: AdES long-term indication (for information) {long_term.ades_subindic}")
            ok = (
                result.ades_subindic.status.name == 'PASSED'
                and status is not None
                and status.bottom_line
                and has_vri
            )
            print(f"{name}: LTV {'PASSED' if ok else 'FAILED'}")
            passed &= bool(ok)
    print("LTV: PASSED" if passed else "LTV: FAILED")
    return 0 if passed else 1


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
