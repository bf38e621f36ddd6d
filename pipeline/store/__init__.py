"""Reading the store back: query filters to SQL, rendering rows, and the query API client."""
