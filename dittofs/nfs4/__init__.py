"""NFS version 4.1 (RFC 8881, XDR in RFC 5662): COMPOUND over the v3 stores."""
