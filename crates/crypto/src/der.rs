//! The few DER encodings the `openssl` crate has no builder for (CRL
//! distribution points, certificate policies). Hand-encoding them keeps us off
//! OpenSSL's deprecated string mini-language (`X509Extension::new_nid`), which
//! can read files and must never see caller-supplied text.

/// One DER TLV with a definite length.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// `CRLDistributionPoints` with one distribution point holding one URI
/// (RFC 5280 §4.2.1.13).
pub(crate) fn crl_distribution_points(uri: &str) -> Vec<u8> {
    // GeneralName uniformResourceIdentifier [6] IMPLICIT IA5String
    let general_name = tlv(0x86, uri.as_bytes());
    // fullName [0] IMPLICIT GeneralNames
    let full_name = tlv(0xa0, &general_name);
    // distributionPoint [0] DistributionPointName (a CHOICE, so explicit)
    let dp_name = tlv(0xa0, &full_name);
    let point = tlv(0x30, &dp_name);
    tlv(0x30, &point)
}

/// `certificatePolicies` with one policy OID and no qualifiers.
/// `oid` is the DER content of the OBJECT IDENTIFIER.
pub(crate) fn certificate_policies(oid: &[u8]) -> Vec<u8> {
    let info = tlv(0x30, &tlv(0x06, oid));
    tlv(0x30, &info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_use_the_long_form() {
        let content = vec![0u8; 300];
        let enc = tlv(0x04, &content);
        assert_eq!(&enc[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(enc.len(), 304);
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
    }

    #[test]
    fn crl_distribution_point_matches_openssl_encoding() {
        // Same value that `openssl req -addext crlDistributionPoints=URI:http://a/c`
        // produces: 30 0e 30 0c a0 0a a0 08 86 06 "http://a/c"[..6]
        let der = crl_distribution_points("http:/");
        assert_eq!(
            der,
            vec![
                0x30, 0x0e, 0x30, 0x0c, 0xa0, 0x0a, 0xa0, 0x08, 0x86, 0x06, b'h', b't', b't', b'p',
                b':', b'/'
            ]
        );
    }
}
