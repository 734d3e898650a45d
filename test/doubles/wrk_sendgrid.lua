-- wrk_sendgrid.lua — wrk script that POSTs a valid SendGrid v3 mail to the
-- provider double, to measure its ceiling:
--   SENDGRID_API_KEY=$(jq -r .sendgrid.api_key test/doubles/credentials.json) \
--     wrk -t2 -c64 -d5s -s test/doubles/wrk_sendgrid.lua http://127.0.0.1:PORT
-- Any non-2xx answer shows up in wrk's "Non-2xx or 3xx responses" line.

local key = os.getenv("SENDGRID_API_KEY") or error("set SENDGRID_API_KEY")

wrk.method = "POST"
wrk.path = "/v3/mail/send"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"personalizations":[{"to":[{"email":"ada@example.test"}]}],'
	.. '"from":{"email":"noreply@example.test"},"subject":"Welcome",'
	.. '"content":[{"type":"text/plain","value":"Hello Ada"}]}'
