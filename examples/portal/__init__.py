"""The portal example: a page with two boxes that calls time and calc found through SRV records."""
