"""The load generator: shoppers walking the funnel in 12 countries, scripted incidents, bad input."""
