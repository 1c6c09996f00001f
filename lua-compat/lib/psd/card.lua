-- psd.card: card number checks as psd_tokenize does them (psd_card.c):
-- normalization (spaces and dashes removed), 12 to 19 digits, the brand
-- from the IIN and the lengths it allows, Luhn; CVV and expiry checks;
-- the "fp_" fingerprint (HMAC-SHA256 of the digits under the fingerprint
-- key) that $psd_card_fingerprint carries; the shape of tokens.
--
-- Never log a card's digits, first6 or the input they came from.
--
--   local card = require "psd.card"
--   local c, status = card.parse("4242 4242 4242 4242")
--   -- c = { digits, len, brand = "visa", first6, last4 } or
--   -- nil, "not_digits" | "bad_length" | "luhn_failed", { len, brand }

local crypto = require "psd.crypto"

local byte, sub, find, gsub = string.byte, string.sub, string.find,
                              string.gsub
local tonumber, type = tonumber, type

local _M = { _VERSION = "0.1.0" }

_M.PAN_MIN = 12
_M.PAN_MAX = 19
_M.FP_KEY_MIN = 16


--- true if the digits pass Luhn (digits only, at least one)
function _M.luhn_valid(digits)
    local len = #digits
    if len == 0 then
        return false
    end

    local sum, dbl = 0, false
    for i = len, 1, -1 do
        local v = byte(digits, i) - 48
        if v < 0 or v > 9 then
            return false
        end
        if dbl then
            v = v * 2
            if v > 9 then
                v = v - 9
            end
        end
        sum = sum + v
        dbl = not dbl
    end

    return sum % 10 == 0
end


--- the brand from the IIN: "visa", "mastercard", "amex", "discover",
--- "jcb", "unionpay", "diners" or "unknown" (needs 6 digits)
function _M.brand(digits)
    if #digits < 6 then
        return "unknown"
    end

    local p2 = tonumber(sub(digits, 1, 2))
    local p3 = tonumber(sub(digits, 1, 3))
    local p4 = tonumber(sub(digits, 1, 4))
    local p6 = tonumber(sub(digits, 1, 6))

    -- the order matters where ranges nest: discover's 622126-622925 is
    -- carved out of unionpay's 62
    if byte(digits, 1) == 52 then
        return "visa"
    end
    if (p2 >= 51 and p2 <= 55) or (p4 >= 2221 and p4 <= 2720) then
        return "mastercard"
    end
    if p2 == 34 or p2 == 37 then
        return "amex"
    end
    if p4 == 6011 or (p3 >= 644 and p3 <= 649) or p2 == 65
       or (p6 >= 622126 and p6 <= 622925)
    then
        return "discover"
    end
    if p4 >= 3528 and p4 <= 3589 then
        return "jcb"
    end
    if p2 == 62 or p2 == 81 then
        return "unionpay"
    end
    if (p3 >= 300 and p3 <= 305) or p2 == 36 or p2 == 38 or p2 == 39 then
        return "diners"
    end

    return "unknown"
end


--- true if len is a valid card number length for the brand
function _M.brand_len_ok(brand, len)
    if len < _M.PAN_MIN or len > _M.PAN_MAX then
        return false
    end

    if brand == "visa" then
        -- 13 for old cards, 19 for some debit ranges
        return len == 13 or len == 16 or len == 19
    elseif brand == "mastercard" then
        return len == 16
    elseif brand == "amex" then
        return len == 15
    elseif brand == "discover" or brand == "jcb" or brand == "unionpay" then
        return len >= 16
    elseif brand == "diners" then
        -- 14 for the classic international cards, up to 19 elsewhere
        return len >= 14
    end

    return true
end


--[[
Normalizes and checks a card number (psd_card_parse): returns
{ digits, len, brand, first6, last4 }, or nil, the status ("not_digits",
"bad_length", "luhn_failed") and { len, brand } for the message.
]]
function _M.parse(input)
    if type(input) ~= "string" then
        return nil, "not_digits", { len = 0, brand = "unknown" }
    end

    if find(input, "[^0-9 %-]") then
        return nil, "not_digits", { len = 0, brand = "unknown" }
    end

    local digits = gsub(input, "[ %-]", "")
    local len = #digits

    if len < _M.PAN_MIN or len > _M.PAN_MAX then
        return nil, "bad_length", { len = len, brand = "unknown" }
    end

    local brand = _M.brand(digits)

    if not _M.brand_len_ok(brand, len) then
        return nil, "bad_length", { len = len, brand = brand }
    end

    if not _M.luhn_valid(digits) then
        return nil, "luhn_failed", { len = len, brand = brand }
    end

    return { digits = digits, len = len, brand = brand,
             first6 = sub(digits, 1, 6), last4 = sub(digits, -4) }
end


--[[
"fp_" + base64url(HMAC-SHA256(key, digits)): the value of
$psd_card_fingerprint for the same psd_fingerprint_key (16 bytes or more).
card: a parse() result or a card number.
]]
function _M.fingerprint(key, card)
    if type(card) == "string" then
        local c, status = _M.parse(card)
        if not c then
            return nil, status
        end
        card = c
    end

    if type(key) ~= "string" or #key < _M.FP_KEY_MIN then
        return nil, "fingerprint key shorter than 16 bytes"
    end

    local mac, err = crypto.hmac_sha256(key, card.digits)
    if not mac then
        return nil, err
    end

    return "fp_" .. crypto.b64url_encode(mac)
end


--- a CVV for a brand: 3 digits, 4 for amex, either for "unknown";
--- "ok", "not_digits" or "bad_length"
function _M.cvv_check(s, brand)
    if find(s, "[^0-9]") then
        return "not_digits"
    end

    local len = #s

    if brand == nil or brand == "unknown" then
        return (len == 3 or len == 4) and "ok" or "bad_length"
    elseif brand == "amex" then
        return len == 4 and "ok" or "bad_length"
    end

    return len == 3 and "ok" or "bad_length"
end


--- "MM/YY", "MM/YYYY" (2000..2099) or "MMYY": month, four-digit year;
--- or nil and "bad_format", "bad_month" or "bad_year"
function _M.expiry_parse(s)
    local len = #s
    local ylen

    if len == 5 or len == 7 then
        if sub(s, 3, 3) ~= "/" then
            return nil, "bad_format"
        end
        ylen = len - 3
        if find(sub(s, 1, 2) .. sub(s, 4), "[^0-9]") then
            return nil, "bad_format"
        end
    elseif len == 4 then
        ylen = 2
        if find(s, "[^0-9]") then
            return nil, "bad_format"
        end
    else
        return nil, "bad_format"
    end

    local m = tonumber(sub(s, 1, 2))
    local y = tonumber(sub(s, len - ylen + 1))

    if m < 1 or m > 12 then
        return nil, "bad_month"
    end

    if ylen == 4 and (y < 2000 or y > 2099) then
        return nil, "bad_year"
    end

    return m, ylen == 2 and 2000 + y or y
end


--- a card is good through the last day of its month, in UTC: "ok",
--- "expired", "bad_month" or "bad_year"
function _M.expiry_check(month, year, now)
    if month < 1 or month > 12 then
        return "bad_month"
    end

    if year >= 0 and year <= 99 then
        year = year + 2000
    end

    if year < 2000 or year > 2099 then
        return "bad_year"
    end

    now = now or (ngx and ngx.time() or os.time())
    local t = os.date("!*t", now)
    if not t then
        return "expired"
    end

    if year * 12 + month < t.year * 12 + t.month then
        return "expired"
    end

    return "ok"
end


--- the shape of a token: "random" (tok_ + 24 base62), "format" (digits
--- of a card's length and brand that fail Luhn) or nil
function _M.token_kind(s)
    if #s == 28 and sub(s, 1, 4) == "tok_" then
        if find(s, "[^A-Za-z0-9]", 5) then
            return nil
        end
        return "random"
    end

    local len = #s
    if len < _M.PAN_MIN or len > _M.PAN_MAX or find(s, "[^0-9]") then
        return nil
    end

    -- a token keeps the card's first six digits and length, so the brand
    -- still fits its length
    if not _M.brand_len_ok(_M.brand(s), len) or _M.luhn_valid(s) then
        return nil
    end

    return "format"
end


return _M
