//! TEST-ONLY key material, generated with `openssl genpkey` for these unit tests and used
//! nowhere else. Never configure a deployment with these keys: they are public.

/// RSA 2048 private key (PKCS#8), signs the RS256 test tokens.
pub const RSA_PRIVATE_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDHjLX9sTDwvwbd\n\
/Qebyz7gXczaYAY5rd33R8n3Gny2+pnBYLFDzjMnLL7HVMg1e7Bbrmh6SVSnPzl4\n\
u2hER/DWoT19dwKJiITemRUUT8N1F0YhzMV6T/GrhtkeVQ4YHWMiyCFPhwrTmLaA\n\
rsORTR0OO8k9vn4iCRJiweMDx8uDCKSOgHwhpePFuJB98soHSahlrMxIxZhBwpgQ\n\
EasxMp4UbbpQ4v98Cqr9mcXkA4UinEQSpZo4ip9XaJraDXIO3tHqVGwZy2Wao7J2\n\
XyMKNtri9pApdTbhRoC5w5Okk+4jqfc87ULK02Svwlf5mnljchNkjlhxMQFlpsq6\n\
uhmADfq7AgMBAAECggEAMSZZVQklssZ6XIcMLrVa4Ux5PnhUUDSg7V1DQ5fEjBUh\n\
dd3pC3hoZQfCXbpmLbYvdAV7OlOBhEgwUapnPhoyGctRJ+v+Nf3oLCOsa3pR/C8l\n\
WQHkygGS1tq585yjghEK7/A3NC1g30lH+l4RUWKa+3yCTrDyxFNTsftrfOzjFXzG\n\
DHhBVQVdAyMupKdGCDB4BzoiKSIaS9ULLZjNg2gD0gO+WNPG+Y54M0rRVyXtBxoI\n\
j+6tQvrqyvo3zHxKRYkpCMnaXSZK+gFzECLYOQmLV2SEkJgSeUncYO0kEsr9AGap\n\
DCd9QxpbQ+QOzP71Tc+ITLuDf6TTr+uMbfQDrgRT0QKBgQDra9Czr2089acQCV+X\n\
yKO3nceUpzwgvkLSobAXbrRCxX+yO14ISzYYqfrQ9m097/Fi0s6kb82pAlL+SBB4\n\
7NGXM8MWW2r7VDMPRA4zU+D+JqMYp7UX6ZM4mBoSJJT3LcU0NHDUw5bnAqbXj6EZ\n\
t+Zrxl6OlOC1ptvtQFcpApmF7wKBgQDY/iyA1lh2+SwmF4vDZadtiNYhBwASRO3R\n\
gXnbH3/sUyfA5hEJoTfCWiumZMPa1MuuoI+7rmiwlcYtGa2yVw/ytoWczxT0b6rS\n\
8IBx6yaAIm4cbOa8trxLi2tSXgpSu1i7wbasmXbxOQdJNQIPUKCGFlbcrtsbTJ4z\n\
MHmv+WED9QKBgF9edNRly5X3We84LN57LD91DmXc/ZGyIbXcRE6pzSKDiYB1Zllr\n\
xoVlTrMaMRT3P80t4wJgPGssAtz56ppiLWHYWT6UWBlqeajEhBAs+adblZSmU8lV\n\
GQvDKkSRRzt+8jV8zPyUI2x/+YC3saaOhizA1otiKknMR6mr9+MoJ3NHAoGBALbP\n\
ZFTiwELzZ4NsAN6MjMKWLrhCeofptGX16+B0qERERlCYQzBWt3AwoWecqvh4oGSt\n\
dopKxH5IoF4srQ57lL8JkIVsXR4V2de+sKfI0XXQC+48vSOt2/LVMYSCH7ZVicsc\n\
xzagT/mn7wB4/RRD/AkbVvCzC3rzULCVnV9o/JflAoGBAIvA2OkVXA+4gt0Se9Nj\n\
yv3PZlcYN5wuZku0c2G6TCnai+ahVhyhNcrmoiCQV9J+7PCrm6G+zwBlESQ/5Nvq\n\
pmPNKBEKt1/RjpDVo6eBvAP/lzhW7qip1UisxYYmYZzPMKC44b9hmR//1Uo9iuL4\n\
jaKWnth48mrm4nBPhlRiex2s\n\
-----END PRIVATE KEY-----\n\
";

/// The public half of [`RSA_PRIVATE_PEM`] (SPKI).
pub const RSA_PUBLIC_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx4y1/bEw8L8G3f0Hm8s+\n\
4F3M2mAGOa3d90fJ9xp8tvqZwWCxQ84zJyy+x1TINXuwW65oeklUpz85eLtoREfw\n\
1qE9fXcCiYiE3pkVFE/DdRdGIczFek/xq4bZHlUOGB1jIsghT4cK05i2gK7DkU0d\n\
DjvJPb5+IgkSYsHjA8fLgwikjoB8IaXjxbiQffLKB0moZazMSMWYQcKYEBGrMTKe\n\
FG26UOL/fAqq/ZnF5AOFIpxEEqWaOIqfV2ia2g1yDt7R6lRsGctlmqOydl8jCjba\n\
4vaQKXU24UaAucOTpJPuI6n3PO1CytNkr8JX+Zp5Y3ITZI5YcTEBZabKuroZgA36\n\
uwIDAQAB\n\
-----END PUBLIC KEY-----\n\
";

/// An RSA 1024 public key: too small, must be refused.
pub const RSA_1024_PUBLIC_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDgn3b1GsDK0z0F3R1PyakhHrl7\n\
EbPhh9FLoR18HCFFnmq0DvV1zox9+bCw8KTCJ5ReGINghfb1AYmOkaOGJyweLx53\n\
tC85bcZWRmbTduV6/7FmPXalyYxEzOdxwEaXm2n/IVM0dwJEDVgsjrWcfU7JyfAg\n\
zgQ47O/s0P1og26vEwIDAQAB\n\
-----END PUBLIC KEY-----\n\
";

/// Ed25519 private key (PKCS#8), signs the EdDSA test tokens.
pub const ED25519_PRIVATE_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIHQ9mn8tzC7zVXqZ8+nIzB4TfgFtIrapXhY3sxGW2dz9\n\
-----END PRIVATE KEY-----\n\
";

/// The public half of [`ED25519_PRIVATE_PEM`].
pub const ED25519_PUBLIC_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MCowBQYDK2VwAyEAQl36EiC5/3NI3Cde34hHSyVUcLsJuWUTFXP/bkKYapY=\n\
-----END PUBLIC KEY-----\n\
";

/// Another Ed25519 private key: its signatures must not verify with [`ED25519_PUBLIC_PEM`].
pub const OTHER_ED25519_PRIVATE_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MC4CAQAwBQYDK2VwBCIEIJSdP2xX28GGFB5gBnVNn2liIal1N3N9c0T4d3jeU+PQ\n\
-----END PRIVATE KEY-----\n\
";
