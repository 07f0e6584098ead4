"""The review server: the stewards' web pages, the JSON API and the admin page over the review
queue library (surd.review)."""
