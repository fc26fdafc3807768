#!/bin/sh
# Makes the TLS tests' throwaway PKI in DIR with the openssl command (never committed):
#   ca.pem/ca.key          the test CA
#   server.pem/.key        localhost + 127.0.0.1, signed by the CA
#   other.pem/.key         other.test (wrong host; SNI's second name), signed by the CA
#   expired.pem/.key       localhost, signed by the CA, valid only in January 2020
#   self.pem/.key          localhost, self-signed
#   rogue-ca.pem/.key      another CA nobody trusts; unknown.pem/.key: localhost, signed by it
#   client.pem/.key        a client certificate (mutual TLS), signed by the CA
# EC P-256 keys: quick to make. Usage: make_certs.sh DIR
set -eu
d=$1
mkdir -p "$d"
cd "$d"
q() { "$@" >/dev/null 2>&1 || { echo "make_certs.sh: failed: $*" >&2; "$@"; exit 1; }; }
key() { q openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"; }
ca() { # name cn
  key "$1"
  q openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 30 -out "$1.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
leaf() { # name cn san issuer [ext]
  key "$1"
  q openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=%s\n' "$3" \
    "${5:-serverAuth}" > "$1.ext"
  q openssl x509 -req -in "$1.csr" -CA "$4.pem" -CAkey "$4.key" -CAcreateserial -days 30 \
    -extfile "$1.ext" -out "$1.pem"
}
ca ca "braid test CA"
ca rogue-ca "rogue CA"
leaf server localhost "DNS:localhost,IP:127.0.0.1" ca
leaf other other.test "DNS:other.test" ca
leaf unknown localhost "DNS:localhost,IP:127.0.0.1" rogue-ca
leaf client braid-client "DNS:braid-client" ca clientAuth
key self
q openssl req -x509 -new -key self.key -subj "/CN=localhost" -days 30 -out self.pem \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1
# Expired: `openssl ca` can set dates in the past.
key expired
q openssl req -new -key expired.key -subj "/CN=localhost" -out expired.csr \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1
mkdir -p newcerts
: > index.txt
echo 1000 > serial
cat > ca.cnf <<CNF
[ ca ]
default_ca = d
[ d ]
database = index.txt
new_certs_dir = newcerts
serial = serial
default_md = sha256
policy = p
copy_extensions = copy
[ p ]
commonName = supplied
CNF
q openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr \
  -out expired.pem -startdate 20200101000000Z -enddate 20200201000000Z -notext
