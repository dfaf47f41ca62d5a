/**
 * What grpc-js's status details say about a failed TLS connection, shared by
 * every gRPC client of ours that speaks mutual TLS (the node channel, the
 * P4Runtime client): the patterns OpenSSL and Node print.
 */

/** the *server* ended the handshake over our certificate (or the lack of one) */
export const REFUSED_BY_PEER = /alert (certificate required|unknown ca|bad certificate|certificate unknown|certificate expired|certificate revoked|unsupported certificate|access denied|handshake failure)|certificate required|SSL alert number (40|42|43|44|45|46|48|49|116)/i;

/** the client could not verify the server's certificate */
export const UNTRUSTED = /unable to verify the first certificate|self[- ]signed certificate|unable to get (local )?issuer certificate|certificate signature failure|certificate has expired|certificate is not yet valid|unsuitable certificate purpose|UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT|UNABLE_TO_GET_ISSUER_CERT|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|INVALID_PURPOSE/i;

/** nothing answered at the address */
export const UNREACHABLE = /ECONNREFUSED|ENOENT|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|EACCES|Failed to connect before the deadline|connect ECONN|No address added out of total/i;

/** a TLS client got something that is not TLS (a plaintext server) */
export const NOT_TLS = /wrong version number|packet length too long|record layer failure|unknown protocol|http request/i;
