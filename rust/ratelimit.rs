//! Per-connection token bucket (PROTOCOL.md §7): `burst` tokens, refilled
//! continuously at `rate` tokens per second (fractions count; the reference
//! refills only in whole seconds).

#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    rate: f64,
    tokens: f64,
    last: Option<f64>,
}

impl TokenBucket {
    /// `burst` ≥ 1 and `rate` ≥ 0 (finite) are checked by the caller-facing constructor.
    pub fn new(burst: u32, rate: f64) -> Result<TokenBucket, &'static str> {
        if burst == 0 {
            return Err("burst must be at least 1");
        }
        if !rate.is_finite() || rate < 0.0 {
            return Err("rate must be a finite number >= 0");
        }
        Ok(TokenBucket { burst: burst as f64, rate, tokens: burst as f64, last: None })
    }

    /// Take one token at time `now` (seconds, any clock that does not jump);
    /// false when the bucket is empty. Time going backwards refills nothing.
    pub fn allow(&mut self, now: f64) -> bool {
        self.refill(now);
        // tolerance: (t0 + dt) - t0 loses bits at wall-clock magnitudes
        if self.tokens >= 1.0 - 1e-6 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// Tokens available at `now` (refills first).
    pub fn tokens(&mut self, now: f64) -> f64 {
        self.refill(now);
        self.tokens
    }

    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now: f64) {
        match self.last {
            Some(last) if now > last => {
                self.tokens = (self.tokens + (now - last) * self.rate).min(self.burst);
                self.last = Some(now);
            }
            Some(_) => {}
            None => self.last = Some(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_fractional_refill() {
        let mut b = TokenBucket::new(3, 10.0).unwrap();
        assert!(b.allow(0.0) && b.allow(0.0) && b.allow(0.0));
        assert!(!b.allow(0.0));
        assert!(!b.allow(0.05)); // half a token
        assert!(b.allow(0.1)); // one whole token after 100 ms
        assert!(!b.allow(0.1));
        assert!(b.tokens(100.0) <= 3.0);
    }
}
