// `sharenode/client`: what a downloader imports: the client key, order files, and the verified download from
// boxes under orders (signing receipts as it goes). Not part of the device bundle's library entry.
export { download, DownloadError, type DownloadOptions, type DownloadResult, type BoxReport } from "./download.js";
export { loadOrCreateClientKey, defaultClientKeyDir, ClientKeyError, type ClientKey } from "./key.js";
export { parseOrderFile, orderTerms, boxUrl, type BoxOrder, type OrderTerms } from "./orders.js";
export { GroupVerifier } from "./verify.js";
export { signReceipt, openReceipt, type Receipt } from "../protocol/receipt.js";
