#!/usr/bin/env bash
# A test PKI for the OCSP check of the federation-list signer, made with the openssl CLI
# (brainpoolP256r1 like the TI PKI). tests/it/ocsp.rs runs it per test with the URL of the
# responder it just started, because that URL goes into the signers' authorityInfoAccess.
# (The other vectors in this directory come from make-vectors.py and are fixed files; these
# cannot be: the responder's port is only known at test time.)
#
#   bash make-ocsp-pki.sh DIR RESPONDER_URL
#
# Writes into DIR (PEM; keys unencrypted, TEST ONLY):
#   root.pem                   trust anchor (CA, pathlen 1)
#   ca.pem ca.key              issuing CA of the signers and of the delegated responder
#   responder.pem .key         delegated responder: issued by ca, extendedKeyUsage OCSPSigning
#   responder-no-eku.pem .key  issued by ca, but without OCSPSigning (must not be accepted)
#   rogue-responder.pem .key   OCSPSigning, but issued by another CA with the same name as ca
#   signer-good.pem .key       serial 0x1001, AIA OCSP → RESPONDER_URL, listed V in index.txt
#   signer-revoked.pem .key    serial 0x1002, AIA OCSP → RESPONDER_URL, listed R (keyCompromise)
#   signer-unknown.pem .key    serial 0x1003, AIA OCSP → RESPONDER_URL, not in index.txt
#   signer-no-aia.pem .key     serial 0x1004, no AIA, listed V
#   index.txt                  the responder's database (openssl ocsp -index)
set -euo pipefail
dir=${1:?usage: make-ocsp-pki.sh DIR RESPONDER_URL}
url=${2:?usage: make-ocsp-pki.sh DIR RESPONDER_URL}
mkdir -p "$dir"
cd "$dir"

curve=brainpoolP256r1
subject() { echo "/C=DE/O=timproxy OCSP Test-PKI NOT-VALID/CN=$1"; }

# key NAME
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:$curve -out "$1.key" 2>/dev/null; }

# issue NAME CN ISSUER SERIAL EXTENSIONS... (ISSUER "self" = self-signed)
issue() {
  local name=$1 cn=$2 issuer=$3 serial=$4
  shift 4
  key "$name"
  printf '%s\n' "$@" >"$name.ext"
  if [ "$issuer" = self ]; then
    openssl req -x509 -new -key "$name.key" -subj "$(subject "$cn")" -days 3650 -sha256 \
      -set_serial "$serial" -extensions v3 -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[v3]\n'; cat "$name.ext") \
      -out "$name.pem"
  else
    openssl req -new -key "$name.key" -subj "$(subject "$cn")" -out "$name.csr"
    openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" -set_serial "$serial" \
      -days 365 -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr"
  fi
  rm -f "$name.ext"
}

ca_ext=("keyUsage=critical,keyCertSign,cRLSign" "subjectKeyIdentifier=hash")
signer_ext=("basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" "subjectKeyIdentifier=hash"
  "authorityKeyIdentifier=keyid" "authorityInfoAccess=OCSP;URI:$url")
responder_ext=("basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" "extendedKeyUsage=OCSPSigning")

issue root "OCSP Test Root-CA" self 0x01 "${ca_ext[@]}" "basicConstraints=critical,CA:TRUE,pathlen:1"
issue ca "OCSP Test Komponenten-CA" root 0x02 "${ca_ext[@]}" "basicConstraints=critical,CA:TRUE,pathlen:0"
issue responder "OCSP Test Responder" ca 0x2001 "${responder_ext[@]}"
issue responder-no-eku "OCSP Test Responder without EKU" ca 0x2002 \
  "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature"
# A second CA that copies the issuing CA's name: its delegate must not be believed.
issue rogue-ca "OCSP Test Komponenten-CA" self 0x66 "${ca_ext[@]}" "basicConstraints=critical,CA:TRUE,pathlen:0"
issue rogue-responder "OCSP Test Responder" rogue-ca 0x2066 "${responder_ext[@]}"
issue signer-good "VZD-FHIR-FList-Signer good" ca 0x1001 "${signer_ext[@]}"
issue signer-revoked "VZD-FHIR-FList-Signer revoked" ca 0x1002 "${signer_ext[@]}"
issue signer-unknown "VZD-FHIR-FList-Signer unknown" ca 0x1003 "${signer_ext[@]}"
issue signer-no-aia "VZD-FHIR-FList-Signer without AIA" ca 0x1004 \
  "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature"
printf 'V\t491231235959Z\t\t1001\tunknown\t%s\n' "$(subject "VZD-FHIR-FList-Signer good")" >index.txt
printf 'R\t491231235959Z\t250601000000Z,keyCompromise\t1002\tunknown\t%s\n' "$(subject "VZD-FHIR-FList-Signer revoked")" >>index.txt
printf 'V\t491231235959Z\t\t1004\tunknown\t%s\n' "$(subject "VZD-FHIR-FList-Signer without AIA")" >>index.txt
