//! Tokens: the signing key, TokenRequest claims, and validation as the API server's
//! authenticator does it (bearer tokens and TokenReview).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::instance::{TokenRequestRecord, TokenReviewRecord};
use crate::object::{meta_str, new_uid, now_unix, rfc3339, set_meta, uid_of};
use crate::resources::res;
use crate::status::{ApiError, ApiResult, FieldError};
use crate::store::State;
use crate::validation::parse_json_body;
use crate::{
    DEFAULT_TOKEN_EXPIRATION, ISSUER, MAX_TOKEN_EXPIRATION, MIN_TOKEN_EXPIRATION,
    TOKEN_LEEWAY_SECONDS,
};

pub(crate) struct SigningKeys {
    encoding: jsonwebtoken::EncodingKey,
    pub(crate) decoding: jsonwebtoken::DecodingKey,
    pub(crate) public_pem: String,
    pub(crate) kid: String,
    modulus: String,
    exponent: String,
}

/// rand 0.9's thread RNG behind the rand_core 0.6 traits that `rsa` 0.9 wants.
struct KeyGenRng;

impl rsa::rand_core::RngCore for KeyGenRng {
    fn next_u32(&mut self) -> u32 {
        rand::random()
    }
    fn next_u64(&mut self) -> u64 {
        rand::random()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut rand::rng(), dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for KeyGenRng {}

/// One 2048-bit key per process: generating it is slow.
pub(crate) fn signing_keys() -> &'static SigningKeys {
    static KEYS: OnceLock<SigningKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        use rsa::traits::PublicKeyParts as _;
        use sha2::Digest as _;

        let private = rsa::RsaPrivateKey::new(&mut KeyGenRng, 2048).expect("generate RSA key");
        let public = private.to_public_key();
        let private_pem = private
            .to_pkcs1_pem(LineEnding::LF)
            .expect("encode private key");
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .expect("encode public key");
        let public_der = public.to_public_key_der().expect("encode public key");
        SigningKeys {
            encoding: jsonwebtoken::EncodingKey::from_rsa_pem(private_pem.as_bytes())
                .expect("load private key"),
            decoding: jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes())
                .expect("load public key"),
            kid: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(public_der.as_bytes())),
            modulus: URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            exponent: URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            public_pem,
        }
    })
}

/// The object a token is bound to (`kubernetes.io.pod` / `kubernetes.io.secret` claims).
pub(crate) struct BoundObject {
    pub(crate) claim: &'static str,
    pub(crate) name: String,
    pub(crate) uid: String,
}

pub(crate) struct TokenClaims<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) service_account: &'a str,
    pub(crate) service_account_uid: &'a str,
    pub(crate) audiences: &'a [String],
    pub(crate) issued_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) bound: Option<&'a BoundObject>,
}

impl SigningKeys {
    pub(crate) fn mint(&self, claims: &TokenClaims<'_>) -> String {
        let mut k8s = json!({
            "namespace": claims.namespace,
            "serviceaccount": {"name": claims.service_account, "uid": claims.service_account_uid},
        });
        if let Some(bound) = claims.bound {
            k8s[bound.claim] = json!({"name": bound.name, "uid": bound.uid});
        }
        let body = json!({
            "iss": ISSUER,
            "aud": claims.audiences,
            "exp": claims.expires_at,
            "iat": claims.issued_at,
            "nbf": claims.issued_at,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
            "jti": new_uid(),
            "kubernetes.io": k8s,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.typ = None;
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &body, &self.encoding).expect("sign token")
    }

    pub(crate) fn jwks(&self) -> Value {
        json!({"keys": [{
            "use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
            "n": self.modulus, "e": self.exponent,
        }]})
    }
}

/// Who a valid token authenticates.
struct AuthenticatedUser {
    pub(crate) username: String,
    pub(crate) uid: String,
    pub(crate) groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
    pub(crate) audiences: Vec<String>,
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

impl State {
    /// Validate a service-account token as the API server does for bearer tokens and
    /// TokenReview: signature, time window (60s leeway), issuer, audiences, and that the
    /// ServiceAccount (and bound pod/secret) still exists with the uid in the token.
    fn authenticate(
        &self,
        keys: &SigningKeys,
        token: &str,
        requested_audiences: &[String],
    ) -> Result<AuthenticatedUser, String> {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Value>(token, &keys.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "square/go-jose: error in cryptographic primitive".to_string()
                }
                _ => format!("token is not a valid service account token: {e}"),
            })?
            .claims;

        if claims["iss"].as_str() != Some(ISSUER) {
            return Err(format!("token issuer {} is not trusted", claims["iss"]));
        }
        let now = now_unix();
        if claims["exp"]
            .as_i64()
            .is_none_or(|exp| now > exp + TOKEN_LEEWAY_SECONDS)
        {
            return Err("service account token has expired".into());
        }
        if claims["nbf"]
            .as_i64()
            .is_some_and(|nbf| now < nbf - TOKEN_LEEWAY_SECONDS)
        {
            return Err("service account token is not valid yet".into());
        }
        let token_audiences: Vec<String> = match &claims["aud"] {
            Value::String(aud) => vec![aud.clone()],
            Value::Array(auds) => auds
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        };
        let api_audiences = vec![ISSUER.to_string()];
        let token_audiences = if token_audiences.is_empty() {
            api_audiences.clone()
        } else {
            token_audiences
        };
        let requested = if requested_audiences.is_empty() {
            api_audiences
        } else {
            requested_audiences.to_vec()
        };
        let audiences: Vec<String> = token_audiences
            .iter()
            .filter(|a| requested.contains(a))
            .cloned()
            .collect();
        if audiences.is_empty() {
            return Err(format!(
                "token audiences {} is invalid for the target audiences {}",
                go_quoted_list(&token_audiences),
                go_quoted_list(&requested)
            ));
        }

        let k8s = &claims["kubernetes.io"];
        let namespace = k8s["namespace"].as_str().unwrap_or("");
        let sa_name = k8s["serviceaccount"]["name"].as_str().unwrap_or("");
        let sa_uid = k8s["serviceaccount"]["uid"].as_str().unwrap_or("");
        if namespace.is_empty() || sa_name.is_empty() {
            return Err("token does not name a service account".into());
        }
        let sa = self
            .get(res("serviceaccounts"), namespace, sa_name)
            .ok_or_else(|| format!("serviceaccounts \"{sa_name}\" not found"))?;
        if uid_of(sa) != sa_uid {
            return Err(format!(
                "service account UID ({}) does not match claim ({sa_uid})",
                uid_of(sa)
            ));
        }
        let mut extra = BTreeMap::new();
        for (claim, resource) in [("pod", "pods"), ("secret", "secrets")] {
            let Some(bound) = k8s.get(claim) else {
                continue;
            };
            let name = bound["name"].as_str().unwrap_or("");
            let uid = bound["uid"].as_str().unwrap_or("");
            let object = self
                .get(res(resource), namespace, name)
                .ok_or_else(|| format!("{resource} \"{name}\" not found"))?;
            if uid_of(object) != uid {
                return Err(format!(
                    "{claim} UID ({}) does not match claim ({uid})",
                    uid_of(object)
                ));
            }
            if claim == "pod" {
                extra.insert(
                    "authentication.kubernetes.io/pod-name".to_string(),
                    vec![name.to_string()],
                );
                extra.insert(
                    "authentication.kubernetes.io/pod-uid".to_string(),
                    vec![uid.to_string()],
                );
            }
        }
        if let Some(jti) = claims["jti"].as_str() {
            extra.insert(
                "authentication.kubernetes.io/credential-id".to_string(),
                vec![format!("JTI={jti}")],
            );
        }
        Ok(AuthenticatedUser {
            username: format!("system:serviceaccount:{namespace}:{sa_name}"),
            uid: sa_uid.to_string(),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
            extra,
            audiences,
        })
    }

    /// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`
    pub(crate) fn token_request(
        &mut self,
        keys: &SigningKeys,
        namespace: &str,
        sa_name: &str,
        body: &[u8],
    ) -> ApiResult<Value> {
        let mut record = TokenRequestRecord {
            namespace: namespace.to_string(),
            service_account: sa_name.to_string(),
            audiences: vec![],
            expiration_seconds: DEFAULT_TOKEN_EXPIRATION,
            status: 201,
        };
        let result = self.token_request_inner(keys, namespace, sa_name, body, &mut record);
        if let Err(err) = &result {
            record.status = err.code;
        }
        self.token_requests.push(record);
        result
    }

    fn token_request_inner(
        &mut self,
        keys: &SigningKeys,
        namespace: &str,
        sa_name: &str,
        body: &[u8],
        record: &mut TokenRequestRecord,
    ) -> ApiResult<Value> {
        let mut request = parse_json_body(body)?;
        let type_ok = request["apiVersion"]
            .as_str()
            .is_none_or(|v| v == "authentication.k8s.io/v1")
            && request["kind"].as_str().is_none_or(|k| k == "TokenRequest");
        if !type_ok {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({} {}) does not match the expected kind (authentication.k8s.io/v1 TokenRequest)",
                request["apiVersion"], request["kind"]
            )));
        }
        let audiences: Vec<String> = match &request["spec"]["audiences"] {
            Value::Null => vec![],
            Value::Array(items) => items
                .iter()
                .map(|a| a.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::bad_request("spec.audiences must be a list of strings"))?,
            _ => {
                return Err(ApiError::bad_request(
                    "spec.audiences must be a list of strings",
                ))
            }
        };
        record.audiences = audiences.clone();
        let requested_expiration = match &request["spec"]["expirationSeconds"] {
            Value::Null => DEFAULT_TOKEN_EXPIRATION,
            value => value.as_i64().ok_or_else(|| {
                ApiError::bad_request("spec.expirationSeconds must be an integer")
            })?,
        };
        record.expiration_seconds = requested_expiration;

        let mut errors = Vec::new();
        for (field, value) in [("name", sa_name), ("namespace", namespace)] {
            if let Some(given) = meta_str(&request, field).filter(|g| !g.is_empty() && *g != value)
            {
                errors.push(FieldError::invalid(
                    format!("metadata.{field}"),
                    json!(given),
                    format!("must match the service account {field} if specified"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                "",
                &errors,
            ));
        }
        let sa_info = res("serviceaccounts");
        let sa = self
            .get(sa_info, namespace, sa_name)
            .ok_or_else(|| ApiError::not_found(sa_info, sa_name))?;
        let sa_uid = uid_of(sa).to_string();
        if requested_expiration < MIN_TOKEN_EXPIRATION {
            errors.push(FieldError::invalid(
                "spec.expirationSeconds",
                json!(requested_expiration),
                "may not specify a duration less than 10 minutes",
            ));
        } else if requested_expiration > 1 << 32 {
            errors.push(FieldError::invalid(
                "spec.expirationSeconds",
                json!(requested_expiration),
                "may not specify a duration larger than 2^32 seconds",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                "",
                &errors,
            ));
        }
        let expiration = requested_expiration.min(MAX_TOKEN_EXPIRATION);
        let audiences = if audiences.is_empty() {
            vec![ISSUER.to_string()]
        } else {
            audiences
        };

        let bound = match request["spec"]
            .get("boundObjectRef")
            .filter(|r| !r.is_null())
        {
            None => None,
            Some(reference) => Some(self.bound_object(namespace, sa_name, reference)?),
        };

        let now = now_unix();
        let token = keys.mint(&TokenClaims {
            namespace,
            service_account: sa_name,
            service_account_uid: &sa_uid,
            audiences: &audiences,
            issued_at: now,
            expires_at: now + expiration,
            bound: bound.as_ref(),
        });
        request["apiVersion"] = json!("authentication.k8s.io/v1");
        request["kind"] = json!("TokenRequest");
        set_meta(&mut request, "name", json!(sa_name));
        set_meta(&mut request, "namespace", json!(namespace));
        set_meta(&mut request, "creationTimestamp", json!(rfc3339(now)));
        request["spec"]["audiences"] = json!(audiences);
        request["spec"]["expirationSeconds"] = json!(expiration);
        request["status"] = json!({
            "token": token,
            "expirationTimestamp": rfc3339(now + expiration),
        });
        Ok(request)
    }

    fn bound_object(
        &self,
        namespace: &str,
        sa_name: &str,
        reference: &Value,
    ) -> ApiResult<BoundObject> {
        let kind = reference["kind"].as_str().unwrap_or("");
        let api_version = reference["apiVersion"].as_str().unwrap_or("v1");
        let name = reference["name"].as_str().unwrap_or("");
        let (claim, resource) = match (api_version, kind) {
            ("v1", "Pod") => ("pod", "pods"),
            ("v1", "Secret") => ("secret", "secrets"),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {api_version}, Kind={kind}"
                )))
            }
        };
        let info = res(resource);
        let object = self
            .get(info, namespace, name)
            .ok_or_else(|| ApiError::not_found(info, name))?;
        if claim == "pod" {
            let pod_sa = object["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default");
            if pod_sa != sa_name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {sa_name:?} to pod running with different serviceaccount name."
                )));
            }
        }
        let uid = uid_of(object).to_string();
        if let Some(wanted) = reference["uid"].as_str().filter(|u| !u.is_empty()) {
            if wanted != uid {
                let message = format!(
                    "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object reference ({wanted}) does not match the UID in record. The object might have been deleted and then recreated"
                );
                return Err(ApiError::new(409, "Conflict", message)
                    .with_details(json!({"name": name, "kind": kind})));
            }
        }
        Ok(BoundObject {
            claim,
            name: name.to_string(),
            uid,
        })
    }

    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`
    pub(crate) fn token_review(
        &mut self,
        keys: &SigningKeys,
        headers: &HeaderMap,
        body: &[u8],
    ) -> ApiResult<Value> {
        let caller = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        if caller.is_empty() || self.authenticate(keys, caller, &[]).is_err() {
            return Err(ApiError::unauthorized());
        }
        let mut review = parse_json_body(body)?;
        if review["kind"].as_str().is_some_and(|k| k != "TokenReview") {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind (TokenReview)",
                review["kind"]
            )));
        }
        let token = review["spec"]["token"].as_str().unwrap_or("").to_string();
        if token.is_empty() {
            return Err(ApiError::bad_request("token is required"));
        }
        let audiences: Vec<String> = review["spec"]["audiences"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let status = match self.authenticate(keys, &token, &audiences) {
            Ok(user) => {
                self.token_reviews.push(TokenReviewRecord {
                    audiences: audiences.clone(),
                    authenticated: true,
                    username: Some(user.username.clone()),
                });
                json!({
                    "authenticated": true,
                    "user": {
                        "username": user.username,
                        "uid": user.uid,
                        "groups": user.groups,
                        "extra": user.extra,
                    },
                    "audiences": user.audiences,
                })
            }
            Err(reason) => {
                self.token_reviews.push(TokenReviewRecord {
                    audiences: audiences.clone(),
                    authenticated: false,
                    username: None,
                });
                json!({
                    "authenticated": false,
                    "user": {},
                    "error": format!("[invalid bearer token, {reason}]"),
                })
            }
        };
        review["apiVersion"] = json!("authentication.k8s.io/v1");
        review["kind"] = json!("TokenReview");
        set_meta(&mut review, "creationTimestamp", Value::Null);
        review["status"] = status;
        Ok(review)
    }
}
